// A task must be a free function, not a trait's provided function.
trait Steps {
    #[shoal::task]
    fn step(x: u64) -> u64 {
        x + 1
    }
}

fn main() {}
