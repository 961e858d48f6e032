//! The waypoint's allocator: mimalloc.
//!
//! A request through the waypoint allocates and frees a few dozen small
//! objects (header maps, frames, futures); with glibc's malloc that was an
//! eighth of the waypoint's CPU, and mimalloc serves the same requests with
//! less (`docs/performance.md`, waybench).
//!
//! Built with `no_thp`: mimalloc otherwise asks for transparent huge pages
//! for its arenas, which nearly doubled an idle waypoint's resident memory
//! (16 MiB against 9) and its peak under 1000 streams (57 MiB against 26).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
