"""`make bench`: webhook throughput and latency, and consumer throughput, on a stack of its own."""
