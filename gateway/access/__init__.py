"""Who may do what: the caller, SMART scopes, and (next) the one access/consent decision."""
from gateway.access.caller import Caller
from gateway.access.scopes import ScopeError, ScopeSet

__all__ = ["Caller", "ScopeError", "ScopeSet"]
