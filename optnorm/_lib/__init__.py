"""Internal plumbing shared by every domain: backend detection, dispatch, validation, the op registry."""
