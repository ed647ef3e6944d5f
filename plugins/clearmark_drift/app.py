"""FastAPI app that lists drift reports and reviews and serves them from the reports bucket.

Mounted by the Airflow API server under ``REPORTS_APP_PATH`` (``/clearmark-drift``; see
``clearmark_drift_plugin.py``); it reads ``reports/drift/<date>/<archive>/`` and
``reports/reviews/<date>/<archive>/`` through :class:`clearmark.storage.ObjectStore` with
the S3 settings of ``clearmark.settings`` (environment or ``$CLEARMARK_HOME/stack.env``).
A review page's flags go to ``<review>/flags``, next to the page: only a user signed in to
Airflow may read or set them, whatever ``require_login`` says.  Links are relative, so the
pages work inside the Airflow UI's iframe and behind a proxy with a path prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates

from clearmark.settings import REPORTS_APP_PATH
from clearmark_drift import reviews as reviews_module

if TYPE_CHECKING:
    from clearmark.storage import ObjectStore

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
URL_PREFIX = REPORTS_APP_PATH


def _default_store() -> ObjectStore:
    from clearmark.settings import get_settings
    from clearmark.storage import ObjectStore

    return ObjectStore(get_settings())


def report_path(report_date: str, archive: str) -> str:
    """Path of a report's page below the app's root (archive names are URL-quoted)."""
    return f"reports/{report_date}/{quote(archive, safe='')}"


async def require_airflow_login(request: Request) -> Any:
    """Let through only users logged in to Airflow: its UI cookie or an API bearer token.

    Airflow does not protect plugin apps itself.  Raises 401/403 like Airflow's own API;
    returns the user.
    """
    from airflow.api_fastapi.auth.managers.base_auth_manager import (
        COOKIE_NAME_JWT_TOKEN,
    )
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    token = credentials if scheme.lower() == "bearer" else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    return await resolve_user_from_token(token)


def create_app(store_factory: Callable[[], ObjectStore] | None = None, *, require_login: bool = False) -> FastAPI:
    """The drift report browser; ``store_factory`` defaults to an ObjectStore from clearmark's settings.

    ``require_login`` (the plugin sets it) admits only users logged in to Airflow.  The
    store is created on the first request, so importing the plugin costs no S3 call.
    """
    from clearmark.drift.report import list_reports, open_report_html

    app = FastAPI(
        title="clearmark drift reports",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(require_airflow_login)] if require_login else [],
    )
    store = cache(store_factory or _default_store)

    def reports(limit: int) -> list[dict[str, Any]]:
        return [{**r, "href": report_path(r["date"], r["archive"])} for r in list_reports(store(), limit=limit)]

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, limit: int = 500) -> HTMLResponse:
        """Reviews (with their flags), field quality per model version, and drift reports."""
        from clearmark.data.feedback import field_quality

        flags = reviews_module.all_current_flags(store())
        context = {
            "reviews": reviews_module.listed(store(), flags, limit),
            "quality": field_quality(list(flags.values())),
            "reports": reports(limit),
        }
        return TEMPLATES.TemplateResponse(request, "index.html", context)

    @app.get("/api/reports")
    def report_list(limit: int = 500) -> list[dict[str, Any]]:
        """The same list as JSON (the summaries plus each report's relative ``href``)."""
        return reports(limit)

    @app.get("/reports/{report_date}/{archive}")
    def report_html(report_date: str, archive: str) -> StreamingResponse:
        """The Evidently HTML report, streamed from object storage."""
        try:
            chunks = open_report_html(store(), report_date, archive)
        except ValueError as exc:
            raise HTTPException(status_code=404, detail=f"No such report: {exc}") from exc
        if chunks is None:
            raise HTTPException(status_code=404, detail=f"No drift report for archive {archive!r} on {report_date}.")
        return StreamingResponse(chunks, media_type="text/html; charset=utf-8")

    @app.get("/api/reviews")
    def review_list(limit: int = 500) -> list[dict[str, Any]]:
        """Reviews, newest first: their summaries, flag counts and relative ``href``."""
        return reviews_module.listed(store(), reviews_module.all_current_flags(store()), limit)

    @app.get("/reviews/{review_date}/{archive}")
    def review_page_redirect(review_date: str, archive: str) -> RedirectResponse:
        return RedirectResponse(f"{quote(archive, safe='')}/", status_code=307)

    @app.get("/reviews/{review_date}/{archive}/flags")
    def review_flags(review_date: str, archive: str, user: Any = Depends(require_airflow_login)) -> dict[str, Any]:
        """The current flag of each image of this review (same archive content, same model version)."""
        summary = reviews_module.stored_summary(store(), review_date, archive)
        return {"flags": reviews_module.flags_of(store(), summary), "user": user.get_name()}

    @app.post("/reviews/{review_date}/{archive}/flags")
    def set_review_flag(
        review_date: str, archive: str, member: str = Body(), flag: str = Body(), user: Any = Depends(require_airflow_login)
    ) -> dict[str, Any]:
        """Record the signed-in user's flag on one pictured image of this review."""
        return reviews_module.record(store(), review_date, archive, member, flag, user.get_name())

    @app.get("/reviews/{review_date}/{archive}/{file_path:path}")
    def review_file(review_date: str, archive: str, file_path: str = "") -> StreamingResponse:
        """The review's page, its thumbnails and full-size images, streamed from object storage."""
        return reviews_module.stream_file(store(), review_date, archive, file_path or "index.html")

    return app
