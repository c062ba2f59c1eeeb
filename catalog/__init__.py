"""servecat catalog layer."""
