"""Every model, imported once so the metadata is complete (Alembic, tests)."""
from server.accounts import models as accounts_models  # noqa: F401
from server.db import Base
from server.distribution import models as distribution_models  # noqa: F401
from server.feedback import models as feedback_models  # noqa: F401
from server.jobs import models as jobs_models  # noqa: F401
from server.notices import models as notices_models  # noqa: F401
from server.notifications import models as notifications_models  # noqa: F401
from server.orders import models as orders_models  # noqa: F401
from server.points import models as points_models  # noqa: F401
from server.posters import models as posters_models  # noqa: F401
from server.referral import models as referral_models  # noqa: F401
from server.reports import models as reports_models  # noqa: F401
from server.risk import models as risk_models  # noqa: F401
from server.settings import models as settings_models  # noqa: F401
from server.training import models as training_models  # noqa: F401

metadata = Base.metadata
