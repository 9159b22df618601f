"""Search: SearchParameter registry, index extraction (FHIRPath), query parsing."""
