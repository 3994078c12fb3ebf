"""dealerline service."""
