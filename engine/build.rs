//! Links the `delt` executable at a fixed address (not as a position-independent executable)
//! on Linux.
//!
//! A PIE is relocated when it starts: the loader writes every pointer in its read-only data
//! (4 MB of vtables and tables for DataFusion and candle), a copy-on-write fault per page. On
//! the benchmark VM that took 12-25 ms of each run, and `delt sql -c "SELECT 1"` took 18.7 ms
//! instead of 4.7. Linked at a fixed address, those pointers are resolved by the linker.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
