// A task cannot be a method: it takes no `self`.
struct Counter {
    step: u64,
}

impl Counter {
    #[shoal::task]
    fn advance(&self, x: u64) -> u64 {
        x + self.step
    }
}

fn main() {
    let c = Counter { step: 2 };
    // The method is still there: no second error at its callers.
    let _ = c.advance(1);
}
