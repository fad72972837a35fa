"""Pure dispatcher logic: what a message record is, and every decision about it. No I/O."""
