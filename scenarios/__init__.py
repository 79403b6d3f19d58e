"""One module per scenario; each exposes one ChatUser subclass (``scenario`` = journal name)."""
from scenarios.account_switch import AccountSwitch
from scenarios.kick_race import KickRace
from scenarios.mass_login import MassLogin
from scenarios.relogin_expiry import ReloginExpiry

ALL = (MassLogin, ReloginExpiry, AccountSwitch, KickRace)

__all__ = ["ALL", "AccountSwitch", "KickRace", "MassLogin", "ReloginExpiry"]
