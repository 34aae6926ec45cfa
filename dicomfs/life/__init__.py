"""The lifecycle of what is stored: last access, expiry and keeps, the audit trail."""
