"""Adapters: the broker port's paper implementation and the Postgres store it persists to."""
