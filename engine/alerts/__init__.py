"""Telling the operator: alerts raised and deduplicated, the channels that
deliver them (webhook, email, Telegram) and their record, the audit trail, and
the daily digest.

Every alert goes through `alerts.Alerts`, so each one can reach every channel.
"""
