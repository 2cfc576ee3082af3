"""Grid files: parsing, validation, model sources, figure specs, column labels, the smoke rule."""
