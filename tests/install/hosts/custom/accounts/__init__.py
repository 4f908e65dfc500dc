"""A host's own user model: e-mail login, a separate public handle (the install test)."""
