"""Orders: the blotter with filters and CSV export, one order's lifecycle, round-trip
trades with P&L, holding time and slippage, and intents the risk gate denied."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from cockpit import orders_views, ui

ui.require_access()

ui.page_header("Orders")

since = ui.window_picker("ord_window", default="1 week")
f1, f2, f3 = st.columns([2, 2, 1])
symbols = f1.multiselect("Symbol", orders_views.order_symbols(ui.db()), key="ord_symbols")
statuses = f2.multiselect("Status", list(orders_views.STATUSES), key="ord_status")
sides = f3.multiselect("Side", list(orders_views.SIDES), key="ord_side")
flt = orders_views.OrderFilter(tuple(symbols), tuple(statuses), tuple(sides), since)

blotter, lifecycle, trips, denied = st.tabs(
    ["Blotter", "Order lifecycle", "Round trips", "Denied intents"]
)

with blotter:
    total = orders_views.orders_count(ui.db(), flt)
    rows = orders_views.orders(ui.db(), flt)
    if rows.empty:
        ui.empty_state("No orders match these filters.", ui.no_engine_hint())
    else:
        st.caption(f"{total} orders match; the newest {len(rows)} are shown.")
        ui.table(
            rows,
            time_columns=("created_at", "updated_at"),
            key="blotter",
            column_config={
                "qty": ui.QTY,
                "filled_qty": ui.QTY,
                "avg_price": ui.PRICE,
                "limit_price": ui.PRICE,
                "stop_price": ui.PRICE,
                "stop_loss": ui.PRICE,
                "take_profit": ui.PRICE,
                "ref_price": ui.PRICE,
            },
        )
        db = ui.db()
        st.download_button(
            f"Export {total} orders as CSV",
            data=lambda: orders_views.orders_csv(db, flt),
            file_name="orders.csv",
            mime="text/csv",
            key="orders_csv",
            on_click="ignore",
        )

with lifecycle:
    ids = orders_views.orders(ui.db(), flt, limit=500)["client_order_id"].tolist()
    if not ids:
        ui.empty_state("No order to show.")
    else:
        chosen = st.selectbox("Order (newest first)", ids, key="ord_pick")
        life = orders_views.order_lifecycle(ui.db(), chosen)
        if life is not None:
            o = life.order
            st.markdown(
                f"**{o['side']} {o['qty']:g} {o['symbol']}** {o['type']} · {o['purpose']} ·"
                f" status **{o['status']}** · filled {o['filled_qty'] or 0:g}"
                + (f" at {o['avg_price']:.4f}" if o["avg_price"] is not None else "")
            )
            if o.get("reason"):
                st.caption(o["reason"])
            ui.table(life.events, time_columns=("ts",), key="events")
            if not life.fills.empty:
                st.markdown("Fills")
                ui.table(
                    life.fills,
                    time_columns=("ts",),
                    key="order_fills",
                    column_config={"price": ui.PRICE, "ref_price": ui.PRICE},
                )
            sizing = orders_views.json_or_empty(o.get("sizing"))
            if sizing:
                with st.expander("Sizing"):
                    st.json(sizing)

with trips:
    symbol = symbols[0] if len(symbols) == 1 else None
    summary = orders_views.trade_summary(ui.db(), symbol, since)
    if summary.trades == 0:
        ui.empty_state("No round trips closed in this window.")
    else:
        c = st.columns(5)
        c[0].metric("Round trips", summary.trades)
        c[1].metric("Win rate", ui.pct(summary.win_rate, digits=0))
        c[2].metric("Net P&L", ui.money(summary.pnl, signed=True))
        c[3].metric("Slippage cost", ui.money(summary.slippage))
        c[4].metric("Avg holding", ui.duration(summary.avg_holding_s))
        df = orders_views.round_trips(ui.db(), symbol, since)
        ui.table(
            df,
            time_columns=("exit_ts", "entry_ts"),
            key="trips",
            column_config={
                "entry_price": ui.PRICE,
                "exit_price": ui.PRICE,
                "exit_reason": st.column_config.TextColumn(
                    "exit", help="stop, target, trailing, time, flatten, signal, ..."
                ),
                "stop": ui.PRICE,
                "target": ui.PRICE,
                "pnl": ui.MONEY,
                "commission": ui.MONEY,
                "slippage": ui.MONEY,
                "holding_s": st.column_config.NumberColumn("holding (s)", format="%.0f"),
            },
        )

with denied:
    by_check = orders_views.denials_by_check(ui.db(), since)
    if by_check.empty:
        ui.empty_state("The risk gate denied nothing in this window.")
    else:
        fig = go.Figure(go.Bar(x=by_check["denied"], y=by_check["check_name"], orientation="h"))
        fig.update_layout(xaxis_title="denied intents", yaxis={"autorange": "reversed"})
        ui.chart(fig, height=80 + 28 * len(by_check), key="denials_chart")
        ui.table(
            orders_views.denied_intents(ui.db(), since),
            time_columns=("ts",),
            key="denied",
            column_config={"qty": ui.QTY},
        )
