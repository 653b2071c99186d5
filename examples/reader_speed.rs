//! The shard stage's reader alone (`ChunkReader`: read, hash, count lines, cut into blocks),
//! for docs/PERFORMANCE.md: `cargo run --release --example reader_speed -- FILE`.
fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).expect("usage: reader_speed FILE");
    let started = std::time::Instant::now();
    let mut reader = logveil::ingest::reader::ChunkReader::open(std::path::Path::new(&path))?;
    let (mut buf, mut blocks) = (Vec::new(), 0u64);
    while let Some(chunk) = reader.next_chunk_in(std::mem::take(&mut buf))? {
        blocks += 1;
        buf = chunk.data;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} lines, {} bytes, {blocks} blocks in {secs:.2} s ({:.0} MB/s)",
        reader.lines(),
        reader.bytes_read(),
        reader.bytes_read() as f64 / secs / 1e6
    );
    Ok(())
}
