"""servecat pipeline layer."""
