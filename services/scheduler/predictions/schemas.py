"""What the predictions control plane answers (JSON, in the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["ok", "rough", "too_little_data", "fit_failed"]


class BgNbdParams(BaseModel):
    r: float
    alpha: float = Field(description="In weeks: the models are fitted with time in weeks")
    a: float
    b: float


class GammaGammaParams(BaseModel):
    p: float
    q: float
    gamma: float


class Fit(BaseModel):
    shop_id: str
    status: Status = Field(
        description="ok; rough (fitted, but on fewer than 400 repeat buyers); too_little_data "
        "(not fitted: see note); fit_failed (the optimiser did not converge)"
    )
    note: str = Field(description="How far to trust the fit, in a sentence or three")
    as_of: datetime = Field(description="The cut-off of the order history the fit saw")
    fitted_at: datetime
    fit_seconds: float
    customers: int = Field(description="Customers with at least one order before as_of")
    repeat_buyers: int = Field(description="Customers who ordered on more than one day")
    repeat_purchases: int
    bgnbd: BgNbdParams | None
    gamma_gamma: GammaGammaParams | None = Field(
        description="None when the spend model could not be fitted; order values are then None"
    )


class Refreshed(BaseModel):
    fit: Fit
    changed: int = Field(
        description="Customers whose stored predictions this refresh changed (or removed)"
    )


class Bucket(BaseModel):
    p_alive_from: float
    p_alive_to: float
    customers: int


class Summary(BaseModel):
    customers: int = Field(description="Customers with predictions")
    expected_orders_30d: float
    expected_orders_90d: float
    expected_revenue_30d: float | None = Field(
        description="Sum of expected orders in 30 days times expected order value"
    )
    expected_revenue_90d: float | None = Field(
        description="Sum of expected orders in 90 days times expected order value"
    )
    p_alive: list[Bucket] = Field(description="Customers by P(alive), ten buckets of 0.1")


class ShopPredictions(BaseModel):
    fit: Fit
    summary: Summary


class CustomerPrediction(BaseModel):
    customer_key: str
    as_of: datetime
    p_alive: float = Field(description="Probability the customer has not lapsed for good")
    expected_orders_30d: float
    expected_orders_90d: float
    next_order_at: datetime | None = Field(
        description="By when another order is as likely as not; None: less than an even chance"
    )
    expected_order_value: float | None
    changed_at: datetime
