"""The dispatcher: turns message requests into e-mails, once each, and says what happened."""
