"""servecat bench layer."""
