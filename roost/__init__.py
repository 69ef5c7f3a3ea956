"""roost: a game-server daemon speaking the Pterodactyl Wings protocol."""
__version__ = "0.1.0"
