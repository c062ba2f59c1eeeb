"""Tests of servecat's contracts (no fixtures needed yet)."""
