"""servecat assets layer."""
