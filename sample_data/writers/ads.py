"""AICPA Audit Data Standard export: ``GL_Detail_<from>_<to>.csv`` plus listings.

Mirrors the genuine ADS sample: comma-separated UTF-8, dates ``YYYYMMDD``, times ``HHMMSS``,
unsigned ``Amount`` with ``Amount_Credit_Debit_Indicator`` D/C. Columns ADS has no name for use
descriptive names in the same style (Cost_Center, Supplier_Account_ID, Reference_Number,
Bank_Account). Listings: Chart_Of_Accounts, Supplier_Listing, User_Listing,
Vendor_Change_Log, Cost_Center_Listing.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sample_data.writers import MasterData, money, write_csv_chunk

GL_COLUMNS = ("Journal_ID", "Journal_ID_Line_Number", "JE_Header_Description",
              "JE_Line_Description", "Business_Unit_Code", "Fiscal_Year", "Period",
              "Effective_Date", "Document_Date", "Entered_Date", "Entered_Time", "Entered_By",
              "Approved_By", "Source", "Document_Type", "GL_Account_Number", "Amount",
              "Amount_Credit_Debit_Indicator", "Amount_Currency", "Cost_Center",
              "Supplier_Account_ID", "Reference_Number", "Bank_Account", "Reversal_Journal_ID")


class AdsWriter:
    def __init__(self, out: Path, year: int) -> None:
        self.dir = out / "ads"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"GL_Detail_{year}0101_{year}1231.csv"
        self.path.unlink(missing_ok=True)
        self.first = True

    def write(self, frame: pl.DataFrame) -> None:
        ymd = lambda c: pl.col(c).dt.strftime("%Y%m%d")  # noqa: E731
        out = frame.select(
            pl.col("journal_id").alias("Journal_ID"),
            pl.col("line_no").alias("Journal_ID_Line_Number"),
            pl.col("header_description").alias("JE_Header_Description"),
            pl.col("description").alias("JE_Line_Description"),
            pl.col("entity").alias("Business_Unit_Code"),
            pl.col("fiscal_year").alias("Fiscal_Year"),
            pl.col("period").alias("Period"),
            ymd("posting_date").alias("Effective_Date"),
            ymd("document_date").alias("Document_Date"),
            ymd("entered_at").alias("Entered_Date"),
            pl.col("entered_at").dt.strftime("%H%M%S").alias("Entered_Time"),
            pl.col("entered_by").alias("Entered_By"),
            pl.col("approved_by").alias("Approved_By"),
            pl.col("source").alias("Source"),
            pl.col("document_type").alias("Document_Type"),
            pl.col("gl_account").alias("GL_Account_Number"),
            money(pl.col("cents")).alias("Amount"),
            pl.when(pl.col("cents") >= 0).then(pl.lit("D")).otherwise(pl.lit("C"))
            .alias("Amount_Credit_Debit_Indicator"),
            pl.col("currency").alias("Amount_Currency"),
            pl.col("cost_center").alias("Cost_Center"),
            pl.col("vendor_id").alias("Supplier_Account_ID"),
            pl.col("reference").alias("Reference_Number"),
            pl.col("bank_account").alias("Bank_Account"),
            pl.col("reversal_of").alias("Reversal_Journal_ID"),
        )
        write_csv_chunk(out, self.path, header=self.first)
        self.first = False

    def close(self, master: MasterData) -> None:
        ymd = lambda c: pl.col(c).dt.strftime("%Y%m%d")  # noqa: E731
        master.accounts.select(
            pl.col("gl_account").alias("GL_Account_Number"),
            pl.col("account_name").alias("GL_Account_Name"),
            pl.col("account_type").alias("Account_Type"),
        ).write_csv(self.dir / "Chart_Of_Accounts.csv")
        master.vendors.select(
            pl.col("vendor_id").alias("Supplier_Account_ID"),
            pl.col("vendor_name").alias("Supplier_Account_Name"),
            pl.col("category").alias("Supplier_Group"),
            pl.col("bank_account").alias("Bank_Account"),
            ymd("created_at").alias("Supplier_Created_Date"),
            pl.when(pl.col("is_person")).then(pl.lit("Y")).otherwise(pl.lit("N"))
            .alias("Supplier_Is_Person"),
        ).write_csv(self.dir / "Supplier_Listing.csv")
        master.users.select(
            pl.col("user_id").alias("User_ID"),
            pl.col("department").alias("Department"),
            pl.col("title").alias("Title"),
            money((pl.col("approval_limit").cast(pl.Float64) * 100).cast(pl.Int64))
            .alias("Approval_Limit"),
            pl.when(pl.col("is_service")).then(pl.lit("Y")).otherwise(pl.lit("N"))
            .alias("Service_Account"),
        ).write_csv(self.dir / "User_Listing.csv")
        master.vendor_changes.select(
            pl.col("vendor_id").alias("Supplier_Account_ID"),
            pl.col("changed_at").dt.strftime("%Y-%m-%d %H:%M:%S").alias("Changed_At"),
            pl.col("field").alias("Field_Name"),
            pl.col("old_value").alias("Old_Value"),
            pl.col("new_value").alias("New_Value"),
            pl.col("changed_by").alias("Changed_By"),
        ).write_csv(self.dir / "Vendor_Change_Log.csv")
        master.cost_centers.select(
            pl.col("cost_center").alias("Cost_Center"),
            pl.col("cost_center_name").alias("Cost_Center_Name"),
            pl.col("department").alias("Department"),
        ).write_csv(self.dir / "Cost_Center_Listing.csv")
