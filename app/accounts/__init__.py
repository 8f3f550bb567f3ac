"""Users, their roles and the streams they may watch; passwords, sessions and logins."""

from .logins import Accounts, LoginGuard, WrongCredentials
from .sessions import COOKIE, Sessions
from .users import (
           Change,
           InvalidUser,
           LastAdmin,
           Role,
           User,
           UserExists,
           Users,
           role_of,
           stream_ids,
           user_name,
)

__all__ = ["COOKIE", "Accounts", "Change", "InvalidUser", "LastAdmin", "LoginGuard", "Role", "Sessions", "User",
           "UserExists", "Users", "WrongCredentials", "role_of", "stream_ids", "user_name"]
