"""Turning sources into device-resident arrays, label-budget splits and batch streams."""
