"""servecat resources layer."""
