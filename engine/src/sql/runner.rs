//! Running SQL text statement by statement, the way the `delt` command line does.

use std::any::Any;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::dml::CopyTo;
use datafusion::logical_expr::{CreateExternalTable, DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{CopyToStatement, DFParser, Statement};
use futures::{FutureExt, TryStreamExt};
use url::Url;

use crate::error::{DeltError, Result};
use crate::io::jsonl::encoder::write_json_lines;
use crate::io::object_stores::{BucketOptions, s3_store, take_aws_options};
use crate::io::output::{CopyTarget, execute_in_order};
use crate::io::training::TrainingFormat;
use crate::progress::{Progress, retries_note};
use crate::sql::diagnose::{self, InputFiles};
use crate::sql::export;
use crate::sql::params::Params;
use crate::sql::resume::{self, ResumeMode};

/// How query results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultFormat {
    /// An aligned text table.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Json,
}

/// Writes a COPY otherwise than by streaming its query through this process: a cluster's
/// distributed fold ([`crate::cluster::fold_copy`]).
#[async_trait::async_trait]
pub trait CopyWriter: Send + Sync {
    /// Writes the result of `query` to `target` and returns the rows written; `None` when
    /// this writer does not take such a query or target (the runner then writes it).
    async fn write(
        &self,
        ctx: &SessionContext,
        query: &LogicalPlan,
        target: &CopyTarget,
    ) -> Result<Option<u64>>;
}

/// Executes SQL text: parameters bound as literals, statements run in order, query results
/// printed, `COPY` written in order and atomically, S3 options of `CREATE EXTERNAL TABLE` and
/// `COPY` applied.
pub struct Runner {
    ctx: SessionContext,
    params: Params,
    format: ResultFormat,
    progress: bool,
    quiet: bool,
    out: Box<dyn Write + Send + Sync>,
    running: RunningStatement,
    resume: Option<ResumeMode>,
    copy_writer: Option<Arc<dyn CopyWriter>>,
}

/// What becomes of a query's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Results {
    /// Printed in the runner's format.
    Print,
    /// Computed and dropped.
    Drop,
    /// Returned as a stream, unread.
    Return,
}

/// Which statement a [`Runner`] is running, readable from outside it (for example by a
/// signal handler that reports what it stopped).
#[derive(Debug, Clone, Default)]
pub struct RunningStatement(Arc<Mutex<Option<String>>>);

impl RunningStatement {
    /// "statement N of ORIGIN (SQL...)", or `None` between statements.
    pub fn get(&self) -> Option<String> {
        self.0.lock().expect("running statement").clone()
    }

    fn set(&self, statement: Option<String>) {
        *self.0.lock().expect("running statement") = statement;
    }
}

impl Runner {
    /// A runner printing results as tables to stdout, without progress display.
    pub fn new(ctx: SessionContext) -> Self {
        Self {
            ctx,
            params: Params::default(),
            format: ResultFormat::Table,
            progress: false,
            quiet: true,
            out: Box::new(std::io::stdout()),
            running: RunningStatement::default(),
            resume: None,
            copy_writer: None,
        }
    }

    /// Offers every COPY (without `--resume`) to `writer` first.
    pub fn with_copy_writer(mut self, writer: Arc<dyn CopyWriter>) -> Self {
        self.copy_writer = Some(writer);
        self
    }

    /// Values for `${name}` in the SQL.
    pub fn with_params(mut self, params: Params) -> Self {
        self.params = params;
        self
    }

    /// Replaces the values for `${name}`, for a runner that runs sources with parameters of
    /// their own one after another.
    pub fn set_params(&mut self, params: Params) {
        self.params = params;
    }

    /// How to print query results.
    pub fn with_format(mut self, format: ResultFormat) -> Self {
        self.format = format;
        self
    }

    /// Progress line on stderr (when it is a terminal) and a summary line per COPY.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self.quiet = !progress;
        self
    }

    /// Where query results go.
    pub fn with_output(mut self, out: Box<dyn Write + Send + Sync>) -> Self {
        self.out = out;
        self
    }

    /// Runs each COPY that reads one table in units kept in a job directory beside its
    /// destination (see [`resume`]); `None`: each COPY runs as a whole.
    pub fn with_resume(mut self, mode: Option<ResumeMode>) -> Self {
        self.resume = mode;
        self
    }

    /// A handle that tells which statement is running.
    pub fn running(&self) -> RunningStatement {
        self.running.clone()
    }

    /// The session statements run in.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs the statements of `sql`, given on the command line.
    pub async fn run_sql(&mut self, sql: &str) -> Result<()> {
        self.run_source(sql, "-c").await
    }

    /// Runs the statements of `sql`; `origin` (a file name) appears in errors.
    pub async fn run_source(&mut self, sql: &str, origin: &str) -> Result<()> {
        self.run_statements(sql, origin, false).await.map(drop)
    }

    /// Runs the statements of `sql` as [`run_source`](Self::run_source) does, except that
    /// query results are not printed: the result of the last statement, when it is a query,
    /// is returned as a stream in the query's order, which runs the query as it is read
    /// (`None` when the last statement is not a query); the results of queries before it are
    /// computed and dropped. For programs that embed delt (the Python module).
    pub async fn run_source_returning(
        &mut self,
        sql: &str,
        origin: &str,
    ) -> Result<Option<SendableRecordBatchStream>> {
        self.run_statements(sql, origin, true).await
    }

    /// Runs the statements of `sql`; with `returning`, the last one's result is returned
    /// and earlier results dropped, otherwise results are printed.
    async fn run_statements(
        &mut self,
        sql: &str,
        origin: &str,
        returning: bool,
    ) -> Result<Option<SendableRecordBatchStream>> {
        let sql = self.params.bind(sql)?;
        let statements = DFParser::parse_sql(&sql).map_err(|e| {
            DeltError::Config(format!(
                "{origin}: SQL syntax error: {}",
                DeltError::from(e)
            ))
        })?;
        let last = statements.len().saturating_sub(1);
        let mut result = None;
        for (index, statement) in statements.into_iter().enumerate() {
            let text = statement.to_string();
            let results = match (returning, index == last) {
                (false, _) => Results::Print,
                (true, false) => Results::Drop,
                (true, true) => Results::Return,
            };
            self.running.set(Some(format!(
                "statement {} of {origin} ({})",
                index + 1,
                snippet(&text)
            )));
            let outcome = match AssertUnwindSafe(self.run_statement(statement, &text, results))
                .catch_unwind()
                .await
            {
                Ok(outcome) => outcome,
                Err(payload) => Err(self.explain_panic(&text, payload).await),
            };
            result = outcome.map_err(|source| DeltError::Statement {
                index: index + 1,
                origin: origin.to_string(),
                sql: snippet(&text),
                source: Box::new(source),
            })?;
            self.running.set(None);
        }
        Ok(result)
    }

    /// Runs one statement; a query's result goes where `results` says (the stream is
    /// returned only for [`Results::Return`]).
    async fn run_statement(
        &mut self,
        statement: Statement,
        text: &str,
        results: Results,
    ) -> Result<Option<SendableRecordBatchStream>> {
        if let Some(format) = export::training_format(&statement) {
            let Statement::CopyTo(copy) = statement else {
                unreachable!("only a COPY has a training format")
            };
            return self.export(copy, format, text).await.map(|()| None);
        }
        let plan = match self.ctx.state().statement_to_plan(statement).await {
            Ok(plan) => plan,
            // Planning reads schemas: a bad file fails here, before there is a plan.
            Err(e) => {
                return Err(match self.explain_missing_path(&e).await {
                    Some(explained) => explained,
                    None => diagnose::explain(&self.ctx, &InputFiles::quoted_in(text), e).await,
                });
            }
        };
        match plan {
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => {
                self.create_external_table(*cmd).await.map(|()| None)
            }
            LogicalPlan::Copy(copy) => self.copy(copy, text).await.map(|()| None),
            plan @ (LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Statement(_)) => {
                self.ctx.execute_logical_plan(plan).await?.collect().await?;
                Ok(None)
            }
            query => self.query(query, results).await,
        }
    }

    async fn create_external_table(&mut self, mut cmd: CreateExternalTable) -> Result<()> {
        let aws = take_aws_options(&mut cmd.options);
        if cmd.file_type.eq_ignore_ascii_case("jsonl") {
            // DataFusion reads a folder as `*.<extension of the format>`, which is `.json` for
            // its JSON reader: name the files of a JSONL folder explicitly.
            for location in cmd.locations.iter_mut().filter(|l| l.ends_with('/')) {
                location.push_str("*.jsonl");
            }
        }
        let mut inputs = Vec::new();
        for location in &cmd.locations {
            self.register_s3(location, &aws)?;
            let input = InputFiles::new(location, &cmd.file_type)
                .ok_or_else(|| DeltError::Config(format!("invalid location '{location}'")))?;
            if input.list(&self.ctx).await?.is_empty() {
                return Err(DeltError::BadInput(format!(
                    "{location}: no such file or no files in that directory; check the LOCATION"
                )));
            }
            inputs.push(input);
        }
        if let Some(error) = diagnose::empty_parquet(&self.ctx, &inputs).await {
            return Err(error);
        }
        let plan = LogicalPlan::Ddl(DdlStatement::CreateExternalTable(Box::new(cmd)));
        match self.ctx.execute_logical_plan(plan).await {
            Ok(_) => Ok(()),
            Err(e) => Err(diagnose::explain(&self.ctx, &inputs, e).await),
        }
    }

    async fn copy(&mut self, copy: CopyTo, text: &str) -> Result<()> {
        if !copy.partition_by.is_empty() {
            return Err(DeltError::Config(
                "COPY ... PARTITIONED BY is not supported: delt writes ordered shards (rows_per_shard)".into(),
            ));
        }
        let mut options = copy.options.clone();
        let aws = take_aws_options(&mut options);
        self.register_s3(&copy.output_url, &aws)?;
        let target = CopyTarget::new(
            &copy.output_url,
            &copy.file_type.get_ext(),
            options,
            &self.ctx.state().default_table_options(),
        )?;
        let inputs = InputFiles::of_plan(&copy.input);
        if let Some(error) = diagnose::empty_parquet(&self.ctx, &inputs).await {
            return Err(error);
        }
        let started = Instant::now();
        if let (None, Some(writer)) = (self.resume, &self.copy_writer) {
            let written = writer.write(&self.ctx, &copy.input, &target).await;
            if let Some(rows) = self.explain_output(written, &inputs).await? {
                self.report_copy(rows, &target, started);
                return Ok(());
            }
        }
        let (input, job) = self
            .units(Arc::unwrap_or_clone(copy.input), target.destination(), text)
            .await?;
        let (stream, progress) = self.ordered_stream(input).await?;
        let store = self.ctx.runtime_env().object_store(target.store_url())?;
        let written = target.write(store, stream, progress.written()).await;
        let rows = self.explain_output(written, &inputs).await?;
        drop(progress);
        if let Some(job) = job {
            job.finish().await;
        }
        self.report_copy(rows, &target, started);
        Ok(())
    }

    fn report_copy(&self, rows: u64, target: &CopyTarget, started: Instant) {
        if !self.quiet {
            eprintln!(
                "wrote {rows} rows to {} in {:.1}s{}",
                target.destination(),
                started.elapsed().as_secs_f64(),
                retries_note()
            );
        }
    }

    /// Plans `plan` and executes it as one stream in its order, with the progress line.
    async fn ordered_stream(
        &self,
        plan: LogicalPlan,
    ) -> Result<(SendableRecordBatchStream, Progress)> {
        let physical = self
            .ctx
            .execute_logical_plan(plan)
            .await?
            .create_physical_plan()
            .await?;
        let progress = Progress::start(&physical, self.progress);
        Ok((execute_in_order(physical, self.ctx.task_ctx())?, progress))
    }

    /// With `--resume`, runs the row-wise units of `input`, a COPY to `destination`, and
    /// returns the plan that finishes it over the unit files and the job to remove once the
    /// output is published; otherwise `input` itself.
    async fn units(
        &self,
        input: LogicalPlan,
        destination: &str,
        text: &str,
    ) -> Result<(LogicalPlan, Option<resume::Job>)> {
        let Some(mode) = self.resume else {
            return Ok((input, None));
        };
        let show = !self.quiet;
        let units = resume::run_units(
            &self.ctx,
            mode,
            text,
            &self.params,
            &input,
            destination,
            show,
        );
        Ok(match units.await? {
            Some(resumable) => (resumable.plan, Some(resumable.job)),
            None => (input, None),
        })
    }

    /// A writer's outcome, with a failed scan inside it explained by naming the input file.
    async fn explain_output<T>(&self, written: Result<T>, inputs: &[InputFiles]) -> Result<T> {
        match written {
            Err(DeltError::Output {
                destination,
                source,
            }) => {
                let source = match *source {
                    DeltError::DataFusion(e) => diagnose::explain(&self.ctx, inputs, e).await,
                    other => other,
                };
                Err(DeltError::Output {
                    destination,
                    source: Box::new(source),
                })
            }
            other => other,
        }
    }

    /// A COPY to a trainer format ([`export`]).
    async fn export(
        &mut self,
        copy: CopyToStatement,
        format: TrainingFormat,
        text: &str,
    ) -> Result<()> {
        let export = export::plan(&self.ctx, copy, format).await?;
        let target = &export.target;
        self.register_s3(target.destination(), &export.aws)?;
        let inputs = InputFiles::of_plan(&export.query);
        if let Some(error) = diagnose::empty_parquet(&self.ctx, &inputs).await {
            return Err(error);
        }
        let started = Instant::now();
        let (query, job) = self
            .units(export.query.clone(), target.destination(), text)
            .await?;
        let (stream, progress) = self.ordered_stream(export.writer_plan(query)?).await?;
        let store = self.ctx.runtime_env().object_store(target.store_url())?;
        let written = target.write(store, stream, progress.written()).await;
        let exported = self.explain_output(written, &inputs).await?;
        drop(progress);
        if let Some(job) = job {
            job.finish().await;
        }
        if !self.quiet {
            eprintln!(
                "wrote {} documents ({} tokens, {} shard{}) to {} in {:.1}s{}",
                exported.documents,
                exported.tokens,
                exported.shards,
                if exported.shards == 1 { "" } else { "s" },
                target.destination(),
                started.elapsed().as_secs_f64(),
                retries_note()
            );
        }
        Ok(())
    }

    async fn query(
        &mut self,
        plan: LogicalPlan,
        results: Results,
    ) -> Result<Option<SendableRecordBatchStream>> {
        let inputs = InputFiles::of_plan(&plan);
        if let Some(error) = diagnose::empty_parquet(&self.ctx, &inputs).await {
            return Err(error);
        }
        let (stream, progress) = self.ordered_stream(plan).await?;
        if results == Results::Return {
            // Read by the caller: no progress line (it shows while the runner reads).
            return Ok(Some(stream));
        }
        let batches: std::result::Result<Vec<RecordBatch>, DataFusionError> =
            stream.try_collect().await;
        drop(progress);
        let batches = match batches {
            Ok(batches) => batches,
            Err(e) => return Err(diagnose::explain(&self.ctx, &inputs, e).await),
        };
        if results == Results::Print {
            self.print(&batches)?;
        }
        Ok(None)
    }

    fn print(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let out = &mut self.out;
        let written = match self.format {
            ResultFormat::Table => writeln!(
                out,
                "{}",
                pretty_format_batches(batches).map_err(DataFusionError::from)?
            )
            .map_err(DataFusionError::from),
            ResultFormat::Csv => {
                let mut writer = CsvWriterBuilder::new().with_header(true).build(&mut *out);
                batches
                    .iter()
                    .try_for_each(|b| writer.write(b))
                    .map_err(DataFusionError::from)
            }
            ResultFormat::Json => batches.iter().try_for_each(|batch| {
                let mut lines = Vec::new();
                write_json_lines(batch, &mut lines).map_err(DataFusionError::from)?;
                out.write_all(&lines).map_err(DataFusionError::from)
            }),
        };
        written?;
        out.flush().map_err(|e| DeltError::io("writing results", e))
    }

    /// A panic inside a reader usually means a corrupt input file: look for one among the
    /// paths the statement names.
    async fn explain_panic(&self, sql: &str, payload: Box<dyn Any + Send>) -> DeltError {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        diagnose::first_problem(&self.ctx, &InputFiles::quoted_in(sql), None)
            .await
            .unwrap_or(DeltError::Panic(message))
    }

    /// DataFusion reports an unreadable path in `FROM '...'` as a missing table; say why
    /// (`None` when the error is not about such a path).
    async fn explain_missing_path(&self, error: &DataFusionError) -> Option<DeltError> {
        let message = error.to_string();
        let path = message
            .split_once("table '")
            .and_then(|(_, rest)| rest.split_once("' not found"))
            .map(|(name, _)| name.trim_start_matches("datafusion.public."));
        let path = path.filter(|p| p.contains('/') || p.contains('.'))?;
        let format = std::path::Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        let input = InputFiles::new(path, format)?;
        match input.list(&self.ctx).await {
            Err(e) => Some(DeltError::BadInput(format!(
                "cannot read {path}: {}",
                DeltError::from(e)
            ))),
            Ok(files) if files.is_empty() => Some(DeltError::BadInput(format!(
                "{path}: no such file or no files in that directory"
            ))),
            Ok(_) => None,
        }
    }

    /// Registers an S3 store for `location`'s bucket when `aws.*` options are given.
    fn register_s3(
        &self,
        location: &str,
        aws: &std::collections::HashMap<String, String>,
    ) -> Result<()> {
        if aws.is_empty() {
            return Ok(());
        }
        let url = Url::parse(location)
            .ok()
            .filter(|u| u.scheme() == "s3")
            .ok_or_else(|| {
                DeltError::Config(format!(
                    "aws.* options apply to s3:// locations, not '{location}'"
                ))
            })?;
        self.ctx.register_object_store(&url, s3_store(&url, aws)?);
        // A cluster session ships these options to its scheduler and executors.
        if let Some(buckets) = self
            .ctx
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .extensions
            .get_mut::<BucketOptions>()
        {
            buckets.insert(url.host_str().unwrap_or_default(), aws);
        }
        Ok(())
    }
}

/// The first line of a statement, shortened for error messages.
fn snippet(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}
