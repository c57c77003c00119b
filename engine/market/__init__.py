"""What the market says: bar feeds and their validator, calendars, indicators.

Not here: any decision. A feed yields bars and never judges a trade.
"""
