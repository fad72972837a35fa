"""Pure ingest logic: webhook verification, platform mapping, folding events into facts."""
