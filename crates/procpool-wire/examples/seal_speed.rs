//! How fast frames are sealed: `cargo run --release -p procpool-wire --example seal_speed`.
fn main() {
    let keys = procpool_wire::seal::LinkKeys::derive(&[1; 32], &[2; 32], &[3; 32]);
    let (mut s, _) = keys.pool_side();
    let body = vec![7u8; 64 << 20];
    let t = std::time::Instant::now();
    let tag = s.seal(body.len(), [&body[..]]);
    let dt = t.elapsed();
    println!(
        "64 MiB sealed in {dt:?}: {:.0} MB/s (tag {:02x})",
        64.0 * 1.048576 / dt.as_secs_f64(),
        tag[0]
    );
    let small = [0u8; 16];
    let n = 200_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(s.seal(16, [&small[..]]));
    }
    println!("16 B frame: {:?} per seal", t.elapsed() / n);
}
