// A task must be a free function, not an associated function of a type.
struct Parser;

impl Parser {
    #[shoal::task]
    fn parse(s: String) -> u64 {
        s.len() as u64
    }
}

fn main() {
    // The function is still there: no second error at its callers.
    let _ = Parser::parse(String::from("x"));
}
