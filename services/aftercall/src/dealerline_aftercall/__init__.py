"""dealerline aftercall service: call records, summaries, emails and texts."""
