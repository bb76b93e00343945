"""Data access: keyword-only functions over a Session, one module per table group.

Routes and tasks call these and never rewrite a query one of them already has. Functions
flush but do not commit: the caller owns the transaction (a request, a task step).
"""
