"""Output: the only place covidct writes files (NIfTI masks, reports, figures)."""
