"""What every part of the engine shares: the error type, limits, atomic writes, the data directory, logins."""
