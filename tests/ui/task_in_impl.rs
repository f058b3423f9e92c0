// A task must be a free function.
struct Parser;

impl Parser {
    #[shoal::task]
    fn parse(s: String) -> u64 {
        s.len() as u64
    }
}

fn main() {}
