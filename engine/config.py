"""Configuration: defaults, then `cockpit.toml`, then `COCKPIT_*` environment variables,
then command-line overrides. Validated once at start; a bad value stops the start
with one message naming the key, the value and what is allowed.

Environment variables use `__` between section and key, e.g.
`COCKPIT_ENGINE__CYCLE_SECONDS=2` or `COCKPIT_RISK__DAILY_LOSS=0.05`.

A key the environment and cockpit.toml leave unset is taken from the encrypted
secrets store when a secret of the same dotted name is stored there
(`python -m engine secrets set alerts.smtp_password`); see `store/secrets.py`.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from store.db import PROJECT_ROOT

DEFAULT_TOML = PROJECT_ROOT / "cockpit.toml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names key, value and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_INTERVAL_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_SPEED = "max"


@functools.lru_cache(maxsize=64)
def interval_ms(text: str) -> int:
    """Milliseconds of a bar interval written as a count and a unit: 30s, 1m, 5m, 1h, 1d."""
    text = text.strip().lower()
    count, unit = text[:-1], text[-1:]
    if unit not in _INTERVAL_UNITS_MS or not count.isdigit() or int(count) <= 0:
        raise ValueError("a bar interval such as 1m, 5m, 1h or 1d (units s, m, h, d)")
    return int(count) * _INTERVAL_UNITS_MS[unit]


def boundary_minutes(text: str) -> int:
    """Minutes after 00:00 UTC of an HH:MM time of day."""
    hours, _, minutes = text.strip().partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError("a time of day HH:MM in UTC, such as 00:00 or 21:00")
    h, m = int(hours), int(minutes)
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError("a time of day HH:MM in UTC, such as 00:00 or 21:00")
    return h * 60 + m


def _check_calendars(names: Iterable[str]) -> None:
    import exchange_calendars

    known = set(exchange_calendars.get_calendar_names(include_aliases=True))
    unknown = sorted({v for v in names if v not in known})
    if unknown:
        raise ValueError(f"unknown exchange calendar {', '.join(unknown)}; use e.g. XNYS")


class EngineSettings(_Section):
    # How often the cycle runs. Left unset, a simulated or replayed market runs one
    # bar per cycle at `speed`: bar_interval / speed seconds (1m bars at 60x: 1 s).
    cycle_seconds: float = Field(1.0, ge=0.05, le=3600)
    bar_interval: str = Field("1m", description="bar length: 1m, 5m, 1h, 1d, ...")
    speed: float | str = Field(
        60.0, description="market seconds per wall second for sim and csv; max = no pacing"
    )
    sim_calendar: str | None = Field(
        None, description='sessions of the simulated market: None = 24/7, or e.g. "XNYS"'
    )
    seed: int = Field(7, ge=0)
    symbols: int | tuple[str, ...] = Field(
        5, description="how many simulated symbols, or their names"
    )
    feed: Literal["sim", "csv", "ccxt", "ib"] = "sim"
    data_dir: Path | None = None
    broker: Literal["paper", "ib"] = "paper"
    starting_cash: float = Field(100_000.0, gt=0)
    warmup_bars: int = Field(200, ge=0, le=10_000)
    max_jump: float = Field(10.0, gt=0, description="bar jump limit, in mean ranges")
    order_timeout_seconds: float = Field(300.0, gt=0)
    failure_pause_after: int = Field(5, ge=1, description="consecutive failed cycles")
    heartbeat_seconds: float = Field(1.0, gt=0, le=60)
    lease_stale_seconds: float = Field(10.0, gt=0)
    keep_cycles_days: float = Field(30.0, gt=0)
    strategy: str = Field("regime", description="regime, sma_cross, or path/to/file.py:ClassName")
    strategy_params: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description="keyword arguments of the strategy"
    )
    backup_at: str = Field("02:30", description="daily prune and backup, HH:MM UTC")
    backup_dir: Path | None = Field(None, description="None = backups/ beside the database")
    keep_backups: int = Field(7, ge=1, le=1000)

    @field_validator("backup_at")
    @classmethod
    def _backup_at(cls, value: str) -> str:
        hours, _, minutes = value.strip().partition(":")
        if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
            raise ValueError("a time of day as HH:MM (UTC), e.g. 02:30")
        if not (0 <= int(hours) < 24 and 0 <= int(minutes) < 60):
            raise ValueError("a time of day as HH:MM (UTC), e.g. 02:30")
        return f"{int(hours):02d}:{minutes}"

    @property
    def backup_hour_minute(self) -> tuple[int, int]:
        hours, minutes = self.backup_at.split(":")
        return int(hours), int(minutes)

    @field_validator("bar_interval")
    @classmethod
    def _bar_interval(cls, value: str) -> str:
        interval_ms(value)
        return value.strip().lower()

    @field_validator("speed")
    @classmethod
    def _speed(cls, value: float | str) -> float | str:
        if isinstance(value, str) and value.strip().lower() == MAX_SPEED:
            return MAX_SPEED
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not 0 < number <= 1_000_000:
            raise ValueError("market seconds per wall second (a number up to 1e6) or max")
        return number

    @field_validator("sim_calendar")
    @classmethod
    def _sim_calendar(cls, value: str | None) -> str | None:
        if value is None or value in ("", "24/7"):
            return None
        _check_calendars([value])
        return value

    @model_validator(mode="after")
    def _pace(self) -> EngineSettings:
        period = self.cycle_period
        if 0 < period < 0.01:
            raise ValueError(
                f"speed {self.speed:g} with bar_interval {self.bar_interval} means a cycle every"
                f" {period * 1000:.2f} ms; the fastest paced cycle is 10 ms: use speed = max"
            )
        return self

    @property
    def bar_ms(self) -> int:
        return interval_ms(self.bar_interval)

    @property
    def simulated(self) -> bool:
        """The market's clock is the engine's own (simulator or replay), not the world's."""
        return self.feed in ("sim", "csv")

    @property
    def as_fast_as_possible(self) -> bool:
        return (
            self.simulated
            and self.speed == MAX_SPEED
            and "cycle_seconds" not in (self.model_fields_set)
        )

    @property
    def cycle_period(self) -> float:
        """Wall seconds between cycles: cycle_seconds when set (or for a live feed),
        else one bar per cycle at the configured speed; 0 = as fast as possible."""
        if "cycle_seconds" in self.model_fields_set or not self.simulated:
            return self.cycle_seconds
        if self.speed == MAX_SPEED:
            return 0.0
        return self.bar_ms / 1000 / float(self.speed)

    @property
    def effective_speed(self) -> float | None:
        """Market seconds per wall second; None when unpaced (max) or live (1)."""
        period = self.cycle_period
        if not self.simulated:
            return 1.0
        return None if period == 0 else self.bar_ms / 1000 / period

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: int | tuple[str, ...]) -> int | tuple[str, ...]:
        if isinstance(value, int):
            if not 1 <= value <= 500:
                raise ValueError("a symbol count must be between 1 and 500")
            return value
        names = tuple(s.strip().upper() for s in value if s.strip())
        if not names:
            raise ValueError("give at least one symbol name")
        if len(set(names)) != len(names):
            raise ValueError("symbol names must be unique")
        return names


class PaperSettings(_Section):
    slippage_bps: float = Field(1.0, ge=0, le=1000)
    slippage_range_share: float = Field(0.02, ge=0, le=1, description="share of bar range")
    commission_per_share: float = Field(0.005, ge=0)
    commission_min: float = Field(1.0, ge=0)
    commission_bps: float = Field(0.0, ge=0, le=1000, description="of the notional, per fill")
    max_participation: float = Field(
        0.25, gt=0, le=1, description="largest share of a bar's volume one order fills"
    )


class RiskSettings(_Section):
    risk_per_trade: float = Field(0.02, gt=0, le=0.2)
    daily_loss: float = Field(0.06, gt=0, le=1)
    max_drawdown: float = Field(0.15, gt=0, le=1)
    max_open_positions: int = Field(5, ge=1, le=500)
    max_position_qty: float = Field(100_000, gt=0)
    max_position_notional: float = Field(0.25, gt=0, le=10, description="share of equity")
    max_gross_exposure: float = Field(1.5, gt=0, le=20, description="multiple of equity")
    max_net_exposure: float = Field(1.0, gt=0, le=20, description="multiple of equity")
    min_reward_risk: float = Field(2.0, ge=0, le=100)
    require_stop: bool = Field(True, description="entries without a stop-loss are denied")
    max_trades_per_day: int = Field(15, ge=1)
    max_consecutive_losses: int = Field(4, ge=1)
    cooldown_minutes: float = Field(5.0, ge=0)
    price_band: float = Field(0.10, gt=0, le=1, description="max distance from last price")
    max_atr_pct: float = Field(0.025, gt=0, le=1)
    # Added by the risk layer (issue 4); every key has a default.
    margin_requirement: float = Field(
        1.0, gt=0, le=1, description="share of notional set aside per position; 1 = no leverage"
    )
    lot_size: float = Field(1.0, gt=0, description="default quantity step")
    lot_sizes: dict[str, float] = Field(default_factory=dict, description="per-symbol steps")
    max_correlated_exposure: float = Field(
        0.5, gt=0, le=20, description="share of equity in one group of correlated symbols"
    )
    correlation_threshold: float = Field(0.8, gt=0, le=1)
    correlation_min_obs: int = Field(30, ge=3, le=100_000)
    max_orders_per_minute: int = Field(30, ge=1)
    max_order_fill_ratio: float = Field(10.0, ge=1)
    order_fill_min_orders: int = Field(20, ge=1, description="orders before the ratio counts")
    max_position_loss: float = Field(
        0.03, gt=0, le=1, description="open loss of one position, share of equity"
    )
    trailing_stop: Literal["off", "atr", "percent"] = "atr"
    trail_atr: float = Field(3.0, gt=0, le=100, description="trailing distance in ATRs")
    trail_percent: float = Field(0.05, gt=0, le=1)
    time_stop_minutes: float = Field(0.0, ge=0, description="0 = no time stop")
    day_boundary: str = Field(
        "00:00", description="HH:MM UTC where a 24/7 symbol's trading day starts"
    )
    stale_bar_intervals: float = Field(5.0, ge=1, description="cycles without a bar")
    stale_flatten_seconds: float = Field(0.0, ge=0, description="0 = never flatten on stale data")
    disconnect_flatten_seconds: float = Field(0.0, ge=0, description="0 = never flatten")
    deadman_intervals: float = Field(10.0, ge=2, description="cycle intervals without a cycle")
    sizing: Literal["fixed_fractional", "volatility", "kelly"] = "fixed_fractional"
    vol_atr_multiple: float = Field(2.0, gt=0, le=100, description="volatility sizing risk unit")
    kelly_fraction: float = Field(0.5, gt=0, le=1)
    kelly_cap: float = Field(0.02, gt=0, le=0.2, description="largest risk share Kelly may give")
    kelly_min_trades: int = Field(30, ge=5)
    kelly_min_wins_losses: int = Field(
        10, ge=1, description="wins and losses each needed before Kelly is used"
    )
    exchanges: dict[str, str] = Field(
        default_factory=dict, description='exchange calendar per symbol, e.g. {AAPL = "XNYS"}'
    )
    events_file: Path | None = Field(None, description="event blackouts; None = events.csv")

    @field_validator("exchanges")
    @classmethod
    def _exchanges(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            return value
        _check_calendars(value.values())
        return {k.upper(): v for k, v in value.items()}

    @field_validator("day_boundary")
    @classmethod
    def _day_boundary(cls, value: str) -> str:
        boundary_minutes(value)
        return value.strip()

    @property
    def day_boundary_minutes(self) -> int:
        return boundary_minutes(self.day_boundary)

    @field_validator("lot_sizes")
    @classmethod
    def _lot_sizes(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not v > 0 for v in value.values()):
            raise ValueError("lot sizes must be positive")
        return {k.upper(): v for k, v in value.items()}


class MlSettings(_Section):
    enabled: bool = True
    override_confidence: float = Field(0.7, ge=0.5, le=1)
    horizon_bars: int = Field(10, ge=1, le=1000)
    retrain_cron: str = "0 3 * * *"
    auto_promote: bool = False
    bootstrap: bool = True
    # Added by the ML layer (issue 5); every key has a default.
    artifacts_dir: Path | None = Field(
        None, description="model files; None = models/ beside the database"
    )
    bootstrap_bars: int = Field(5_000, ge=500, le=1_000_000, description="per simulated symbol")
    psi_warning: float = Field(0.10, gt=0, le=10, description="PSI that raises a warning")
    psi_alert: float = Field(0.25, gt=0, le=10, description="PSI that raises a HIGH alert")
    drift_window: int = Field(
        5_000, ge=100, le=1_000_000, description="latest live rows, all symbols, compared"
    )
    accuracy_decay: float = Field(
        0.10, gt=0, le=1, description="live accuracy this far below training raises an alert"
    )
    min_scored: int = Field(200, ge=20, description="scored predictions before judging")


class IbContract(_Section):
    """One instrument for the IB feed; qualified with IB at start."""

    symbol: str
    sec_type: str = Field("STK", description="STK, CASH, FUT, IND, ...")
    exchange: str = "SMART"
    currency: str = "USD"
    primary_exchange: str = Field("", description="e.g. NASDAQ, NYSE, ARCA: settles ambiguity")
    calendar: str | None = Field(None, description="exchange_calendars name, e.g. XNYS")

    @field_validator("symbol", "sec_type", "exchange", "currency", "primary_exchange")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.strip().upper()

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, value: str | None) -> str | None:
        if value:
            _check_calendars([value])
        return value or None


class IbSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(7497, ge=1, le=65535)
    client_id: int = Field(17, ge=0)
    account: str = ""
    timeout_seconds: float = Field(5.0, gt=0, le=120)
    backoff_min_seconds: float = Field(5.0, gt=0, le=300)
    backoff_max_seconds: float = Field(300.0, gt=0, le=3600)
    breaker_failures: int = Field(5, ge=1, description="failed connects before entries block")
    maintenance_windows: tuple[str, ...] = Field(
        ("23:40-01:05", "sun 00:00-03:00"),
        description="gateway nightly reset / weekly re-login, HH:MM-HH:MM [after a day]",
    )
    maintenance_timezone: str = "America/New_York"
    contracts: tuple[IbContract, ...] = Field(
        (), description="the IB feed's instruments; a symbol without one is a SMART US stock"
    )

    @field_validator("maintenance_windows")
    @classmethod
    def _windows(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from engine.execution.brokers.ib_link import parse_window

        for text in value:
            parse_window(text)
        return value


class CcxtSettings(_Section):
    """Public candles from a crypto exchange through ccxt (`engine.feed = "ccxt"`)."""

    exchange: str = Field("binance", description="a ccxt exchange id, e.g. binance, kraken")
    timeframe: str = Field("1m", description="candle length, e.g. 1m, 5m, 1h")
    timeout_seconds: float = Field(10.0, gt=0, le=60)

    @field_validator("exchange")
    @classmethod
    def _exchange(cls, value: str) -> str:
        import ccxt

        if value not in ccxt.exchanges:
            raise ValueError("not an exchange ccxt knows; e.g. binance, kraken, coinbase")
        return value


class CockpitSettings(_Section):
    autostart: bool = True
    timezone: str = "UTC"
    refresh_seconds: float = Field(2.0, ge=0.5, le=60)
    password_hash: SecretStr | None = None
    idle_timeout_minutes: float = Field(
        30.0, gt=0, le=1440, description="a logged-in session idle this long must log in again"
    )

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("an IANA time zone such as UTC or Europe/Zurich") from None
        return value


class AlertSettings(_Section):
    min_severity: Literal["INFO", "WARNING", "HIGH", "CRITICAL"] = "HIGH"
    webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = "cockpit@localhost"
    smtp_to: tuple[str, ...] = ()
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    telegram_token: SecretStr | None = Field(None, description="a bot token from @BotFather")
    telegram_chat_id: str | None = None
    telegram_api_url: str = "https://api.telegram.org"
    group_seconds: float = Field(
        5.0, ge=0, le=3600, description="alerts within this long of a send go out as one; 0 = off"
    )
    digest_cron: str = Field("0 7 * * *", description="daily digest, UTC; empty = none")
    retry_seconds: float = Field(
        0.5, gt=0, le=60, description="wait before a failed send's first retry; doubles after"
    )

    @field_validator("digest_cron")
    @classmethod
    def _digest_cron(cls, value: str) -> str:
        if value.strip():
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(
                    f"{exc}; use five cron fields (minute hour day month weekday), e.g. '0 7 * * *'"
                ) from None
        return value


class LogSettings(_Section):
    dir: Path | None = Field(None, description="log folder; None = logs/ beside the database")
    max_bytes: int = Field(10_000_000, ge=10_000, description="one file's size before rotating")
    backups: int = Field(5, ge=1, le=100, description="rotated files kept")
    json_lines: bool = Field(False, description="one JSON object per line instead of text")


class MetricsSettings(_Section):
    address: str = Field("127.0.0.1", description="where /metrics and /healthz listen")
    port: int = Field(9108, ge=0, le=65535, description="0 = no metrics server")
    stale_seconds: float | None = Field(
        None,
        gt=0,
        description="no finished cycle for this long: /healthz 503; None = dead-man limit",
    )


class BacktestSettings(_Section):
    max_runs: int = Field(1_000, ge=1, le=1_000_000, description="largest sweep")
    out_dir: Path | None = Field(None, description="run folders; None = var/backtests")
    workers: int = Field(0, ge=0, le=256, description="sweep processes; 0 = one per core")


class EnvironmentVariables(EnvSettingsSource):
    """COCKPIT_* variables, where a list may also be written as plain text:
    `COCKPIT_ALERTS__SMTP_TO=ops@example.com,oncall@example.com`."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            if not isinstance(value, str) or value.lstrip().startswith(("[", "{")):
                raise  # meant as JSON: let the JSON error stand
            return [part.strip() for part in value.split(",") if part.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COCKPIT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    engine: EngineSettings = EngineSettings()
    paper: PaperSettings = PaperSettings()
    risk: RiskSettings = RiskSettings()
    ml: MlSettings = MlSettings()
    ib: IbSettings = IbSettings()
    ccxt: CcxtSettings = CcxtSettings()
    cockpit: CockpitSettings = CockpitSettings()
    alerts: AlertSettings = AlertSettings()
    metrics: MetricsSettings = MetricsSettings()
    backtest: BacktestSettings = BacktestSettings()
    logs: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = Path(os.environ.get("COCKPIT_CONFIG", "") or DEFAULT_TOML)
        return (
            init_settings,
            EnvironmentVariables(settings_cls),
            TomlConfigSettingsSource(settings_cls, toml_file=toml),
        )


_SECTIONS: dict[str, type[BaseModel]] = {
    "engine": EngineSettings,
    "paper": PaperSettings,
    "risk": RiskSettings,
    "ml": MlSettings,
    "ib": IbSettings,
    "ccxt": CcxtSettings,
    "cockpit": CockpitSettings,
    "alerts": AlertSettings,
    "metrics": MetricsSettings,
    "backtest": BacktestSettings,
    "logs": LogSettings,
}
SECTIONS = _SECTIONS  # read-only use outside this module
# Variables that belong to the process, not to the settings tree.
_PROCESS_VARIABLES = {
    "COCKPIT_DB",
    "COCKPIT_CONFIG",
    "COCKPIT_NO_AUTOSTART",
    "COCKPIT_PASSWORD_HASH",
    "COCKPIT_SECRET_KEY",
}


def _allowed(loc: tuple[str | int, ...]) -> str:
    if len(loc) == 1:
        return "sections: " + ", ".join(_SECTIONS)
    section = _SECTIONS.get(str(loc[0]))
    return "keys: " + ", ".join(section.model_fields) if section else ""


def _describe(error: Any) -> str:
    loc = tuple(p for p in error["loc"] if not isinstance(p, int) or len(error["loc"]) < 3)
    key = ".".join(str(p) for p in loc)
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"{key} = {value!r}: unknown key; allowed {_allowed(loc)}"
    return f"{key} = {value!r}: {error['msg']}"


def _check_environment() -> None:
    """A misspelt COCKPIT_ variable is an error, not a setting silently ignored."""
    env = {k for k in os.environ if k.startswith("COCKPIT_") and k not in _PROCESS_VARIABLES}
    for name in env:
        section = name.removeprefix("COCKPIT_").split("__", 1)[0].lower()
        if section not in _SECTIONS or "__" not in name:
            raise ConfigError(
                f"{name} = {os.environ[name]!r}: unknown variable; use COCKPIT_<SECTION>__<KEY>"
                f" with a section among {', '.join(_SECTIONS)}"
            )


def load_settings(db: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load and validate; `overrides` are sections of keys from the command line.

    With `db`, keys left unset are filled from that database's secrets store."""
    _check_environment()
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v})
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None
    except (SettingsError, ValueError, OSError) as exc:
        # A source that cannot be read at all (a value that is not JSON, a TOML
        # syntax error, an unreadable file): still one line, with the cause.
        cause = exc.__cause__ or exc.__context__
        detail = f": {cause}" if cause is not None else ""
        raise ConfigError(f"{exc}{detail}".replace("\n", " ")) from None
    if settings.engine.feed == "csv" and settings.engine.data_dir is None:
        raise ConfigError("engine.data_dir = None: the csv feed needs a folder of SYMBOL.csv files")
    if settings.engine.feed == "ib":
        settings = _ib_instruments(settings)
    if settings.engine.feed in ("ccxt", "ib") and isinstance(settings.engine.symbols, int):
        example = "BTC/USDT" if settings.engine.feed == "ccxt" else "AAPL"
        raise ConfigError(
            f"engine.symbols = {settings.engine.symbols}: the {settings.engine.feed} feed needs"
            f' market names, e.g. symbols = ["{example}"]'
        )
    if settings.engine.feed == "ccxt":
        settings = _ccxt_on_paper(settings)
    if settings.engine.feed == "sim":
        settings = _sized_for_the_simulator(settings)
    if os.environ.get("COCKPIT_PASSWORD_HASH") and settings.cockpit.password_hash is None:
        settings = settings.model_copy(
            update={
                "cockpit": settings.cockpit.model_copy(
                    update={"password_hash": SecretStr(os.environ["COCKPIT_PASSWORD_HASH"])}
                )
            }
        )
    if db is not None:
        settings = with_stored_secrets(settings, Path(db))
    return settings


def _ccxt_on_paper(settings: Settings) -> Settings:
    """The ccxt feed's crypto markets trade on the paper broker, on bars of its timeframe."""
    if settings.engine.broker != "paper":
        raise ConfigError(
            f"engine.broker = {settings.engine.broker!r}: the ccxt feed's crypto markets"
            ' trade on the paper broker only; set broker = "paper"'
        )
    return _bars_of_the_timeframe(settings)


def _ib_instruments(settings: Settings) -> Settings:
    """The IB feed's symbols and contracts agree: each symbol has a contract (a SMART
    US stock unless `ib.contracts` says otherwise), and a contract's calendar becomes
    the symbol's exchange calendar unless `risk.exchanges` names one."""
    engine, ib, risk = settings.engine, settings.ib, settings.risk
    given = {c.symbol: c for c in ib.contracts}
    if isinstance(engine.symbols, int):
        if not given:
            return settings  # the symbol-names error below says what to set
        symbols = tuple(given)
    else:
        symbols = engine.symbols
    contracts = tuple(given.get(s) or IbContract(symbol=s) for s in symbols)
    exchanges = {c.symbol: c.calendar for c in contracts if c.calendar} | dict(risk.exchanges)
    return settings.model_copy(
        update={
            "engine": engine.model_copy(update={"symbols": symbols}),
            "ib": ib.model_copy(update={"contracts": contracts}),
            "risk": risk.model_copy(update={"exchanges": exchanges}),
        }
    )


def with_stored_secrets(settings: Settings, db: Path) -> Settings:
    """`settings` with the keys it leaves unset filled from the secrets store of `db`."""
    from store.secrets import SecretsError, stored_values

    try:
        stored = stored_values(db)
    except SecretsError as exc:
        raise ConfigError(f"secrets store: {exc}") from None
    return with_secrets(settings, stored)


def with_secrets(settings: Settings, stored: Mapping[str, str]) -> Settings:
    """Fill keys left unset from `stored` (dotted names); names that are no key are ignored."""
    update: dict[str, BaseModel] = {}
    for section_name, model in _SECTIONS.items():
        section: BaseModel = getattr(settings, section_name)
        found = {
            key: stored[f"{section_name}.{key}"]
            for key in model.model_fields
            if f"{section_name}.{key}" in stored and key not in section.model_fields_set
        }
        if not found:
            continue
        explicit = {k: getattr(section, k) for k in section.model_fields_set}
        try:
            update[section_name] = model.model_validate({**found, **explicit})
        except ValidationError as exc:
            # The value is a secret: name the key and the rule, never the input.
            reasons = "; ".join(
                f"{section_name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"secrets store: {reasons}") from None
    return settings.model_copy(update=update) if update else settings


MASK = "***"
# A key whose name says it holds a credential is masked whatever its value.
_SECRET_KEY = re.compile(r"password|passwd|token|secret|api_?key|credential|user|account")


def mask_url(url: str) -> str:
    """A URL with its user, password, path and query hidden: scheme, host and port stay."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    hidden = parts.username or parts.password or parts.path.strip("/") or parts.query
    return f"{parts.scheme}://{host}{port}/{MASK}" if hidden else f"{parts.scheme}://{host}{port}"


def _masked(key: str, value: Any, stored: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _masked(f"{key}.{k}", v, stored) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(key, v, stored) for v in value]
    if value is None or value == "":
        return value
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    if key in stored or _SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        return MASK
    return value


# The simulated market trades one-minute bars around the clock, about two hundred
# round trips a (24-hour) day on five symbols; a day limit sized for a stock
# session would stop the demo within its first market hour and keep it idle for
# the rest of the day. These apply to the simulator only, and only where the
# operator did not set the key.
SIM_RISK_DEFAULTS: dict[str, Any] = {"max_trades_per_day": 500, "max_consecutive_losses": 12}


def _sized_for_the_simulator(settings: Settings) -> Settings:
    risk = settings.risk
    update = {k: v for k, v in SIM_RISK_DEFAULTS.items() if k not in risk.model_fields_set}
    if not update:
        return settings
    return settings.model_copy(update={"risk": risk.model_copy(update=update)})


def _bars_of_the_timeframe(settings: Settings) -> Settings:
    """A ccxt feed's bars are its candles: the bar interval is the timeframe."""
    timeframe = settings.ccxt.timeframe.strip().lower()
    try:
        candle_ms = interval_ms(timeframe)
    except ValueError:
        return settings  # the feed names the bad timeframe when it starts
    engine = settings.engine
    if "bar_interval" in engine.model_fields_set and engine.bar_ms != candle_ms:
        raise ConfigError(
            f"engine.bar_interval = {engine.bar_interval!r}: the ccxt feed's bars are its"
            f" {timeframe} candles (ccxt.timeframe); set one to match the other"
        )
    return settings.model_copy(
        update={"engine": engine.model_copy(update={"bar_interval": timeframe})}
    )


def effective(settings: Settings, stored: set[str] | None = None) -> dict[str, Any]:
    """The effective configuration as plain data, every secret masked (for `engine config`):
    credential keys, every key filled from the secrets store (`stored` names), and the
    user, password, path and query of every URL."""
    data = settings.model_dump(mode="json")
    return {section: _masked(section, values, stored or set()) for section, values in data.items()}
