//! Command-line arguments: each option defined once, with its help text. Parsing only validates;
//! files are opened by the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Fine-tune vision-language models on product catalogs.
///
/// tailor reads a catalog of product photos with categories and descriptions, turns each row into
/// the chat the recipe trains on (system message, user: image + prompt, assistant:
/// "category1/category2: description"), and prepares it exactly as Hugging Face's Qwen2.5-VL
/// processor does.
#[derive(Debug, Parser)]
#[command(name = "tailor", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, split and prepare catalogs.
    Data {
        /// The data command.
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Generate the catalog answer ("category1/category2: description") for product images or
    /// catalog rows; prints one JSON object per image, in input order.
    Predict(PredictArgs),
    /// Fine-tune with LoRA from a TOML config whose keys are the Hugging Face names
    /// (SFTConfig / TrainingArguments / LoraConfig); see configs/ and the README.
    Train(TrainArgs),
    /// Merge a LoRA adapter into its base model and write the result in the Hugging Face layout
    /// (safetensors shards + index, config, tokenizer and processor files).
    Export(ExportArgs),
    /// Generate an answer for every sample of a catalog (or one split of it), score it against
    /// the catalog's own answer and write metrics.json, predictions.jsonl and report.html.
    Eval(EvalArgs),
    /// The whole product with no download: a synthetic catalog, the small base model shipped with
    /// tailor, a LoRA fine-tune, base and fine-tuned evaluation on held-out products, and a report.
    Demo(DemoArgs),
}

/// `tailor demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where everything goes: the catalog, the training run, metrics.json and report.html.
    #[arg(long, default_value = "tailor-demo", value_name = "DIR")]
    pub out: PathBuf,
    /// Use another base model folder instead of the shipped one.
    #[arg(long, value_name = "DIR")]
    pub base_model: Option<PathBuf>,
    /// Use another fine-tuning config instead of configs/demo-finetune.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Evaluate at most this many held-out samples.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Products in the synthetic catalog (four views each; a tenth are held out for testing and
    /// a tenth for validation).
    #[arg(long, value_name = "N", default_value_t = crate::demo::PRODUCTS)]
    pub products: usize,
}

/// `tailor eval`
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model folder or hub repo id.
    #[arg(long, value_name = "DIR_OR_REPO_ID")]
    pub model: String,
    /// A LoRA adapter on top of --model (its split.json, when present, tells the training labels).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Also evaluate the base model without the adapter, side by side.
    #[arg(long, requires = "adapter")]
    pub compare_base: bool,
    /// The catalog to evaluate on.
    #[arg(long, value_name = "PATH")]
    pub dataset: PathBuf,
    /// A split.json: evaluate only its --split rows (and take the training labels from its train
    /// rows).
    #[arg(long, value_name = "FILE")]
    pub split_file: Option<PathBuf>,
    /// Which part of --split-file: train, valid or test.
    #[arg(long, default_value = "test", value_name = "NAME")]
    pub split: String,
    /// Output folder for metrics.json, predictions.jsonl and report.html.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Let the model write any category prefix (by default it is restricted to the label pairs
    /// seen in training when they are known, and the report shows the effect).
    #[arg(long)]
    pub no_constrain: bool,
    /// Evaluate at most this many samples.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Most tokens to generate per sample.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_new_tokens: usize,
    /// Samples per generation batch.
    #[arg(long, default_value_t = 8, value_name = "B")]
    pub batch_size: usize,
    #[command(flatten)]
    pub chat: PromptArgs,
    /// Weight dtype for computation.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub pixels: PixelArgs,
}

/// `tailor train`
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training config (TOML with [model], [data], [lora] and [training] sections).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override one config key, e.g. --set training.max_steps=10 (repeatable; the value is
    /// read as TOML, else as a string).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from a checkpoint: `latest` (the newest checkpoint-N in output_dir, the default
    /// when the flag has no value) or a checkpoint folder. The result is the same as an
    /// uninterrupted run.
    #[arg(long, num_args = 0..=1, default_missing_value = "latest", value_name = "latest|DIR")]
    pub resume: Option<String>,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// `tailor export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The base model folder or hub repo id the adapter was trained on.
    #[arg(long, value_name = "DIR_OR_REPO_ID")]
    pub model: String,
    /// The adapter folder (PEFT layout).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Output folder (created; must be empty if it exists).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// dtype of the written weights.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Largest shard (decimal units, as transformers: 5GB, 500MB).
    #[arg(long, default_value = "5GB", value_name = "SIZE")]
    pub max_shard_size: String,
}

/// `tailor predict`
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model folder, or a Hugging Face repo id (e.g. Qwen/Qwen2.5-VL-3B-Instruct) fetched into the
    /// standard hub cache (HF_HOME, HF_HUB_OFFLINE, HF_ENDPOINT and HF_TOKEN are honoured).
    #[arg(long, value_name = "DIR_OR_REPO_ID")]
    pub model: String,
    /// A LoRA adapter folder (PEFT layout: adapter_config.json + adapter_model.safetensors), as
    /// `tailor train` writes it or Python PEFT saves it; applied on top of --model.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Let the model write any category prefix. By default, when the adapter (or model folder)
    /// holds the labels.json that `tailor train` writes, answers start with one of those labels.
    #[arg(long)]
    pub no_constrain: bool,
    /// Image files to describe (repeat the flag or list several).
    #[arg(long, num_args = 1.., value_name = "PATH", conflicts_with = "dataset")]
    pub image: Vec<PathBuf>,
    /// A catalog whose rows to describe (any layout `tailor data` reads).
    #[arg(long, value_name = "PATH")]
    pub dataset: Option<PathBuf>,
    /// A split.json from `tailor data split`: only the rows of --split are described.
    #[arg(long, value_name = "FILE", requires = "dataset")]
    pub split_file: Option<PathBuf>,
    /// Which part of --split-file: train, valid or test.
    #[arg(long, default_value = "test", value_name = "NAME")]
    pub split: String,
    #[command(flatten)]
    pub chat: PromptArgs,
    /// Most tokens to generate per image.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_new_tokens: usize,
    /// Greedy decoding (the default; sampling starts when any sampling option is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p", "seed"])]
    pub greedy: bool,
    /// Sampling temperature.
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// Sample only among the K most likely tokens.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sample only from the smallest set of tokens whose probability reaches P.
    #[arg(long, value_name = "P")]
    pub top_p: Option<f64>,
    /// Seed for sampling (same seed, same output).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Repetition penalty (default: the model's generation_config.json, else 1.0).
    #[arg(long, value_name = "P")]
    pub repetition_penalty: Option<f64>,
    /// Weight dtype for computation.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Images per generation batch (prompts are left-padded together).
    #[arg(long, default_value_t = 4, value_name = "B")]
    pub batch_size: usize,
    #[command(flatten)]
    pub pixels: PixelArgs,
    /// Write the JSON lines here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `--dtype` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats (exact parity with transformers' f32).
    F32,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
}

/// `--device` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

/// `tailor data …`
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Summarise a catalog: rows, columns, categories, image sizes, image and text tokens, and how
    /// much the random split leaks products across splits.
    Stats(StatsArgs),
    /// Split a catalog into train / valid / test and write DIR/split.json (0-based row indices).
    ///
    /// Without --group-by the rows and their order are exactly those of Hugging Face datasets'
    /// `train_test_split(test_size, seed)` followed by a second `train_test_split(valid_size,
    /// seed)` of the test part (train = first train, valid = second train, test = second test).
    /// With --group-by no product appears in two splits.
    Split(SplitArgs),
    /// Show the chat samples of a few rows as the model will see them: rendered text, token
    /// counts, image grid and which tokens carry labels.
    Preview(PreviewArgs),
    /// Write the synthetic sample catalog (or a larger one) to disk in any supported layout.
    Synth(SynthArgs),
}

/// Where the catalog is and which columns play which role.
#[derive(Debug, Args, Clone)]
pub struct DatasetArgs {
    /// The catalog: a .parquet file, a folder of parquet shards, a HF dataset folder with
    /// data/*.parquet, a .jsonl or .csv file, or an image folder with metadata.jsonl /
    /// metadata.csv. Without it, the synthetic sample catalog built into tailor is used.
    #[arg(long, value_name = "PATH", env = "TAILOR_DATASET")]
    pub dataset: Option<PathBuf>,
    /// Column holding the image ({bytes, path} struct, bytes, or a path / base64 string).
    #[arg(long, default_value = "image", value_name = "NAME")]
    pub image_column: String,
    /// Column holding the first category level (e.g. WOMEN).
    #[arg(long, default_value = "category1", value_name = "NAME")]
    pub category1_column: String,
    /// Column holding the second category level (e.g. dresses).
    #[arg(long, default_value = "category2", value_name = "NAME")]
    pub category2_column: String,
    /// Column holding the description.
    #[arg(long, default_value = "text", value_name = "NAME")]
    pub text_column: String,
    /// Skip rows that cannot be used (null values, bad images, invalid UTF-8) and report how many,
    /// instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
}

/// Product grouping.
#[derive(Debug, Args, Clone)]
pub struct GroupArgs {
    /// Column that identifies the product (e.g. item_ID); rows of one product stay together.
    #[arg(long, value_name = "COLUMN")]
    pub group_by: Option<String>,
    /// Regex applied to the --group-by value; its first capture group is the product id
    /// (e.g. 'id_(\d+)' for DeepFashion's item_ID).
    #[arg(long, value_name = "REGEX", requires = "group_by")]
    pub group_pattern: Option<String>,
}

/// Split fractions and seed, named as in `train_test_split`.
#[derive(Debug, Args, Clone)]
pub struct SplitSizes {
    /// Fraction of rows held out from training (valid + test).
    #[arg(long, default_value_t = 0.2, value_name = "FRACTION", value_parser = fraction)]
    pub test_size: f64,
    /// Fraction of the held-out rows that become the test split (the rest is valid).
    #[arg(long, default_value_t = 0.5, value_name = "FRACTION", value_parser = fraction)]
    pub valid_size: f64,
    /// Seed of the NumPy generator (`np.random.default_rng(seed)`) that shuffles rows.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The model files the text and image processing read.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Model folder with tokenizer.json, the chat template and preprocessor_config.json. Without
    /// it, tailor's embedded tiny tokenizer and the Qwen2.5-VL-3B image settings are used: image
    /// token counts are then exact, text token counts only indicative.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub pixels: PixelArgs,
}

/// Image budget overrides.
#[derive(Debug, Args, Clone)]
pub struct PixelArgs {
    /// Override the processor's min_pixels.
    #[arg(long, value_name = "N")]
    pub min_pixels: Option<u64>,
    /// Override the processor's max_pixels (caps image tokens: one token per 28×28 pixels).
    #[arg(long, value_name = "N")]
    pub max_pixels: Option<u64>,
}

/// The prompt side of the chat: system message and user text.
#[derive(Debug, Args, Clone)]
pub struct PromptArgs {
    /// System message template ({column} placeholders allowed). Default: the recipe's.
    #[arg(long, value_name = "TEMPLATE")]
    pub system: Option<String>,
    /// Send no system message (the chat template then adds its own default).
    #[arg(long, conflicts_with = "system")]
    pub no_system: bool,
    /// User prompt template after the image. Default: "What is this product?".
    #[arg(long, value_name = "TEMPLATE")]
    pub prompt: Option<String>,
}

/// Chat formatting.
#[derive(Debug, Args, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Assistant answer template. Default: "{category1}/{category2}: {text}".
    #[arg(long, value_name = "TEMPLATE")]
    pub target: Option<String>,
    /// Which tokens carry labels: `assistant` (the answer and its closing <|im_end|>) or `recipe`
    /// (the TRL tutorial collator: everything except padding and image tokens).
    #[arg(long, value_enum, default_value_t = LabelMaskArg::Assistant)]
    pub label_mask: LabelMaskArg,
    /// Longest sample in tokens; longer ones are skipped (never cut through image tokens) and
    /// counted.
    #[arg(long, value_name = "TOKENS")]
    pub max_length: Option<usize>,
}

/// `--label-mask` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LabelMaskArg {
    /// Only the assistant's answer and its closing <|im_end|>.
    Assistant,
    /// The TRL tutorial's collator (pad and image tokens ignored, everything else trained).
    Recipe,
}

/// `tailor data stats`
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub chat: ChatArgs,
    #[command(flatten)]
    pub group: GroupArgs,
    #[command(flatten)]
    pub sizes: SplitSizes,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// `tailor data split`
#[derive(Debug, Args)]
pub struct SplitArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    #[command(flatten)]
    pub group: GroupArgs,
    #[command(flatten)]
    pub sizes: SplitSizes,
    /// Folder to write split.json into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `tailor data preview`
#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub chat: ChatArgs,
    /// How many rows to show.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub rows: usize,
    /// First row to show (0-based).
    #[arg(long, default_value_t = 0, value_name = "ROW")]
    pub from: usize,
}

/// `tailor data synth`
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output: a .parquet / .jsonl / .csv file, or a folder for --format imagefolder.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Layout to write; by default taken from --out's extension.
    #[arg(long, value_enum)]
    pub format: Option<SynthFormat>,
    /// Number of rows (default: the embedded sample's size). Rows beyond the sample's products
    /// continue with new products.
    #[arg(long, value_name = "N")]
    pub rows: Option<usize>,
    /// Seed of the catalog generator.
    #[arg(long, value_name = "SEED")]
    pub seed: Option<u64>,
    /// Add a generic `caption` column (shape, colour and pattern words, never a category or a
    /// gender): the pretraining task of the demo's base model.
    #[arg(long)]
    pub caption: bool,
    /// Image width in pixels (default: the embedded sample's 64). Garments are drawn in the
    /// largest centred 2:3 frame, so a width:height other than 2:3 adds margins.
    #[arg(long, value_name = "PIXELS")]
    pub width: Option<u32>,
    /// Image height in pixels (default: the embedded sample's 96).
    #[arg(long, value_name = "PIXELS")]
    pub height: Option<u32>,
}

/// Layouts `tailor data synth` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SynthFormat {
    /// Parquet in the Hugging Face datasets layout (image = {bytes, path}).
    Parquet,
    /// JSON Lines with base64 images.
    Jsonl,
    /// CSV with base64 images.
    Csv,
    /// A folder of images plus metadata.jsonl.
    Imagefolder,
}

fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} must be strictly between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tailor").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn split_defaults_are_the_recipes() {
        let Command::Data {
            command: DataCommand::Split(a),
        } = parse(&["data", "split", "--out", "o"]).unwrap().command
        else {
            panic!("not split")
        };
        assert_eq!(
            (a.sizes.test_size, a.sizes.valid_size, a.sizes.seed),
            (0.2, 0.5, 42)
        );
        assert!(a.dataset.dataset.is_none() && a.group.group_by.is_none());
    }

    #[test]
    fn fractions_are_validated() {
        assert!(parse(&["data", "split", "--out", "o", "--test-size", "1.5"]).is_err());
        assert!(parse(&["data", "split", "--out", "o", "--test-size", "0"]).is_err());
        assert!(parse(&["data", "split", "--out", "o", "--valid-size", "x"]).is_err());
        assert!(parse(&["data", "split", "--out", "o", "--test-size", "0.1"]).is_ok());
    }

    #[test]
    fn group_pattern_needs_group_by() {
        assert!(
            parse(&[
                "data",
                "split",
                "--out",
                "o",
                "--group-pattern",
                "id_(\\d+)"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "data",
                "split",
                "--out",
                "o",
                "--group-by",
                "item_ID",
                "--group-pattern",
                "id_(\\d+)"
            ])
            .is_ok()
        );
    }

    #[test]
    fn system_and_no_system_conflict() {
        assert!(parse(&["data", "stats", "--system", "x", "--no-system"]).is_err());
        let Command::Data {
            command: DataCommand::Stats(a),
        } = parse(&["data", "stats", "--label-mask", "recipe", "--json"])
            .unwrap()
            .command
        else {
            panic!("not stats")
        };
        assert_eq!(a.chat.label_mask, LabelMaskArg::Recipe);
        assert!(a.json);
    }
}
