"""The customer service's tables (the migrations create them; these definitions are what queries use)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

metadata = MetaData()

customers = Table(
    "customers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_no", String(20), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("name", String(100), nullable=False),
    Column("owner_id", String(64), nullable=False),
    Column("team_id", String(64), nullable=False),
    Column("branch_id", String(64), nullable=False),
    Column("region", String(64), nullable=False),
    Column("request_id", String(64), nullable=True, unique=True),
    # crm_platform.idempotency.fingerprint of the request that first used request_id (NULL before 0017).
    Column("request_fingerprint", String(64), nullable=True),
    Column("version", BigInteger, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("gender", String(10), nullable=False, default=""),
    Column("birth_date", Date, nullable=True),
    Column("id_type", String(40), nullable=False, default=""),
    Column("id_number_enc", LargeBinary, nullable=True),
    Column("id_number_hash", String(80), nullable=True),
    Column("mobile_enc", LargeBinary, nullable=True),
    Column("mobile_hash", String(80), nullable=True),
    Column("email_enc", LargeBinary, nullable=True),
    Column("address_enc", LargeBinary, nullable=True),
    Column("contact_mobile_enc", LargeBinary, nullable=True),
    Column("occupation", String(100), nullable=False, default=""),
    Column("employer", String(100), nullable=False, default=""),
    Column("annual_income", Numeric(17, 2), nullable=True),
    Column("annual_income_currency", String(3), nullable=False, default=""),
    Column("family_situation", String(500), nullable=False, default=""),
    Column("risk_appetite", String(20), nullable=False, default=""),
    Column("risk_assessed_on", Date, nullable=True),
    Column("risk_expires_on", Date, nullable=True),
    Column("investment_experience", String(200), nullable=False, default=""),
    Column("interests", Text, nullable=False, default="[]"),
    Column("credit_code", String(18), nullable=True),
    Column("industry", String(100), nullable=False, default=""),
    Column("main_business", String(500), nullable=False, default=""),
    Column("contact_person", String(50), nullable=False, default=""),
    Column("parent_customer_id", String(36), nullable=False, default=""),
    Column("tier", String(20), nullable=False, default="none"),
    Column("source_channel", String(30), nullable=False, default=""),
    Column("do_not_disturb", Boolean, nullable=False, default=False),
    Column("erased_at", DateTime(timezone=True), nullable=True),
    Column("aum", Numeric(17, 2), nullable=False, default=0),
    Column("product_count", Integer, nullable=False, default=0),
    Column("last_contact_at", DateTime(timezone=True), nullable=True),
    Column("merged_into", String(36), nullable=True),
    Column("merged_at", DateTime(timezone=True), nullable=True),
)

customer_holdings = Table(
    "customer_holdings",
    metadata,
    Column("customer_id", String(36), primary_key=True),
    Column("product_code", String(40), primary_key=True),
    Column("product_name", String(100), nullable=False),
    Column("product_type", String(20), nullable=False),
    Column("amount", Numeric(17, 2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("start_date", Date, nullable=True),
    Column("maturity_date", Date, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

customer_keys = Table(
    "customer_keys",
    metadata,
    Column("customer_id", String(36), primary_key=True),
    Column("kid", String(40), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

customer_tags = Table(
    "customer_tags",
    metadata,
    Column("customer_id", String(36), primary_key=True),
    Column("tag", String(20), primary_key=True),
    Column("created_by", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("managed", Boolean, nullable=False, default=False),
)

customer_managed_tags = Table(
    "customer_managed_tags",
    metadata,
    Column("branch_id", String(64), primary_key=True),  # "" = the bank-wide catalog
    Column("name", String(20), primary_key=True),
    Column("description", String(200), nullable=False, default=""),
    Column("applicable_roles", Text, nullable=False, default="[]"),
    Column("created_by", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

customer_segments = Table(
    "customer_segments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("filter", Text, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("branch_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

customer_history = Table(
    "customer_history",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_id", String(36), nullable=False),
    Column("action", String(20), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("note", String(500), nullable=False, default=""),
    Column("changes", Text, nullable=False, default="[]"),
)

# Reads of personal facts by other services (birthdays for greetings and alerts): who asked, on whose behalf,
# for what and how many customers were answered — the customer service's own evidence of every such read.
data_access_log = Table(
    "data_access_log",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("caller", String(64), nullable=False, comment="the service identity, svc:<name>"),
    Column("on_behalf_of", String(64), nullable=False, default=""),
    Column("request_id", String(64), nullable=False, default=""),
    Column("purpose", String(40), nullable=False, comment="the RPC, e.g. ListBirthdays"),
    Column("detail", String(200), nullable=False, default="", comment="the query, e.g. branch and window"),
    Column("answered", Integer, nullable=False, comment="how many customers the answer named"),
)
