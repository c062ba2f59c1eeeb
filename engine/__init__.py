"""servecat engine layer."""
