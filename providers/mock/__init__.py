"""Mock carriers and handset vendors: one aiohttp app serving them all."""

from providers.mock.server import create_mock_app

__all__ = ["create_mock_app"]
