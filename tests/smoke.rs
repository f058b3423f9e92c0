use shoal::prelude::*;

#[shoal::task]
fn inc(x: u64) -> u64 {
    x + 1
}

#[shoal::task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[shoal::task]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

#[shoal::task]
fn len_archived(v: &Archived<Vec<u8>>) -> u64 {
    v.len() as u64
}

#[shoal::task]
fn make(n: u64) -> Vec<u8> {
    vec![7; n as usize]
}

#[test]
fn smoke() {
    let client = Client::threads(2).unwrap();
    let a = client.submit(inc, 1).unwrap();
    let b = client.submit(add, (&a, 10)).unwrap();
    assert_eq!(b.result().unwrap(), 12);
    let fs = client.map(inc, 0..100u64).unwrap();
    let t = client.submit(total, &fs).unwrap();
    assert_eq!(t.result().unwrap(), 5050);
    let v = client.submit(make, 1000).unwrap();
    let l = client.submit(len_archived, &v).unwrap();
    assert_eq!(l.result().unwrap(), 1000);
    let lz: Vec<Lazy<u64>> = (0..10u64).map(|i| inc.lazy(i).unwrap()).collect();
    let s = total.lazy(lz).unwrap();
    assert_eq!(s.compute(&client).unwrap(), 55);
}
