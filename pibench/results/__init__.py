"""Results: versioned run records (made, validated, written, read), reports in the papers' layout (terminal,
markdown, LaTeX, csv, json, plots), the published figures beside them, the CI gate."""
