// A parameter type that is not an rkyv type.
#[shoal::task]
fn open(path: std::path::PathBuf) -> u64 {
    path.as_os_str().len() as u64
}

fn main() {}
