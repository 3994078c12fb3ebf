"""Shared code for the dealerline fleet: the only package every service imports."""
