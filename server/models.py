"""Every model, imported once so the metadata is complete (Alembic, tests)."""
from server.accounts import models as accounts_models  # noqa: F401
from server.db import Base
from server.referral import models as referral_models  # noqa: F401
from server.settings import models as settings_models  # noqa: F401

metadata = Base.metadata
