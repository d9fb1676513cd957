"""What the HTTP services share: the Queue in the app's lifespan, errors, auth, limits."""
