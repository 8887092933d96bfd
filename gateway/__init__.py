"""Rich-message gateway for banks: branded cards, routing, campaigns, events."""
