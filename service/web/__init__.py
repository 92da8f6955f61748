"""The support page (server-rendered HTML, htmx for the live parts): see `pages`."""

from __future__ import annotations

from pathlib import Path

from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from service.web.pages import support_pages

# The token middleware of the JSON API does not run here: the page signs its visitors in itself.
PAGE_PATHS = "^/support(/|$)"


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=Path(__file__).parent / "templates", engine=JinjaTemplateEngine)


__all__ = ["PAGE_PATHS", "support_pages", "template_config"]
