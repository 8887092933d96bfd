"""Typed application keys: the one place where what lives on the app is named."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.services import Services

SERVICES: web.AppKey[Services] = web.AppKey("services")
