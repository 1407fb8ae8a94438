//! `tokenize`, `token_count` and COPY to the trainer formats (`STORED AS MEGATRON`,
//! `STORED AS TOKENS`), read back here by the published byte layouts (not delt's writer code)
//! and compared with the `tokenizers` crate's encoding of each text in the folded order.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int64Type, UInt32Type, UInt64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use delt_models::testing;
use delt_models::tokenizer::train_bpe;
use tokenizers::Tokenizer;

use crate::common::*;

/// A byte-level BPE tokenizer of 300 tokens trained on `rows`' texts, saved in `dir`; its
/// `<pad>` token serves as the end of a document.
fn small_tokenizer(dir: &Path, rows: &[Row]) -> PathBuf {
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let path = dir.join("tokenizer.json");
    train_bpe(&texts, 300).unwrap().save(&path, false).unwrap();
    path
}

/// The ids the tokenizer gives `text` without special tokens.
fn encode(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    tokenizer.encode(text, false).unwrap().get_ids().to_vec()
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// A Megatron indexed dataset read by its layout: the documents' token ids, and the dtype code.
fn read_megatron(prefix: &Path) -> (Vec<Vec<u32>>, u8) {
    let idx = std::fs::read(prefix.with_extension("idx")).unwrap();
    let bin = std::fs::read(prefix.with_extension("bin")).unwrap();
    assert_eq!(&idx[..9], b"MMIDIDX\0\0");
    assert_eq!(u64_at(&idx, 9), 1, "version");
    let code = idx[17];
    let width = match code {
        8 => 2,
        4 => 4,
        other => panic!("dtype code {other}"),
    };
    let sequences = u64_at(&idx, 18) as usize;
    let documents = u64_at(&idx, 26) as usize;
    assert_eq!(documents, sequences + 1, "one sequence per document");
    let lengths: Vec<usize> = (0..sequences)
        .map(|i| i32::from_le_bytes(idx[34 + 4 * i..38 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let pointers_at = 34 + 4 * sequences;
    let pointers: Vec<usize> = (0..sequences)
        .map(|i| u64_at(&idx, pointers_at + 8 * i) as usize)
        .collect();
    let index_at = pointers_at + 8 * sequences;
    let index: Vec<u64> = (0..documents)
        .map(|i| u64_at(&idx, index_at + 8 * i))
        .collect();
    assert_eq!(index, (0..documents as u64).collect::<Vec<_>>());
    assert_eq!(
        idx.len(),
        index_at + 8 * documents,
        "nothing after the index"
    );
    let total: usize = lengths.iter().sum();
    assert_eq!(bin.len(), total * width, ".bin holds exactly the sequences");
    let docs = lengths
        .iter()
        .zip(&pointers)
        .map(|(&len, &at)| {
            (0..len)
                .map(|i| {
                    let b = &bin[at + i * width..at + (i + 1) * width];
                    match width {
                        2 => u16::from_le_bytes(b.try_into().unwrap()) as u32,
                        _ => i32::from_le_bytes(b.try_into().unwrap()) as u32,
                    }
                })
                .collect()
        })
        .collect();
    (docs, code)
}

/// A flat token shard read by llm.c's layout: (version, tokens). uint16 tokens are GPT-2's
/// magic 20240520 version 1, uint32 tokens Llama 3's magic 20240801 version 7.
fn read_flat(path: &Path) -> (i32, Vec<u32>) {
    let bytes = std::fs::read(path).unwrap();
    let field = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    assert!((3..256).all(|i| field(i) == 0), "reserved header fields");
    let (version, count) = (field(1), field(2) as usize);
    let magic = if version == 1 { 20240520 } else { 20240801 };
    assert_eq!(field(0), magic, "magic of version {version}");
    let body = &bytes[1024..];
    let tokens: Vec<u32> = match version {
        1 => body
            .chunks(2)
            .map(|c| u16::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect(),
        7 => body
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        other => panic!("version {other}"),
    };
    assert_eq!(tokens.len(), count, "header token count");
    (version, tokens)
}

/// The sidecar: (row, id, start, tokens) of each document.
fn read_sidecar(path: &Path) -> Vec<(u64, Option<i64>, u64, u32)> {
    let file = std::fs::File::open(path).unwrap();
    let mut out = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
    {
        let batch = batch.unwrap();
        let rows = batch
            .column_by_name("row")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let ids = batch.column_by_name("id");
        let starts = batch
            .column_by_name("start")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let tokens = batch
            .column_by_name("tokens")
            .unwrap()
            .as_primitive::<UInt32Type>();
        for i in 0..batch.num_rows() {
            let id = ids.map(|c| c.as_primitive::<Int64Type>().value(i));
            out.push((rows.value(i), id, starts.value(i), tokens.value(i)));
        }
    }
    out
}

/// `n` rows with scores (many ties) and the texts of the bundled sample documents, in Parquet
/// files under `dir/data`, and a tokenizer trained on them.
fn fixture(dir: &Path, n: usize) -> (Vec<Row>, PathBuf, Tokenizer) {
    let sample = std::fs::read_to_string(repo().join("examples/data/docs.jsonl")).unwrap();
    let texts: Vec<String> = sample
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            line["text"].as_str().unwrap().to_string()
        })
        .collect();
    let mut rows = rows(n, 11, false);
    for (i, row) in rows.iter_mut().enumerate() {
        row.text = texts[i % texts.len()].clone();
    }
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    write_parquet_files(&data, &rows, 3);
    let path = small_tokenizer(dir, &rows);
    let tokenizer = Tokenizer::from_file(&path).unwrap();
    (rows, path, tokenizer)
}

#[test]
fn megatron_export_is_the_folded_order_tokenized() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, tok, tokenizer) = fixture(dir.path(), 300);
    let out = dir.path().join("out/");
    run_sql(
        &[&format!(
            "COPY (SELECT id, text, score FROM '{}/' ORDER BY fold_order(score, 3)) TO '{}/' \
             STORED AS MEGATRON OPTIONS (tokenizer '{}', eos_token '<pad>')",
            p(dir.path(), "data"),
            out.display(),
            tok.display()
        )],
        &[],
    );
    assert_eq!(
        names(&out),
        vec![
            "part-00000.bin",
            "part-00000.docs.parquet",
            "part-00000.idx"
        ]
    );
    let (docs, code) = read_megatron(&out.join("part-00000"));
    assert_eq!(code, 8, "uint16 for a vocabulary of 300");
    let pad = tokenizer.token_to_id("<pad>").unwrap();
    let order = reference_fold(&rows, 3, "asc");
    assert_eq!(docs.len(), order.len());
    let mut start = 0;
    let sidecar = read_sidecar(&out.join("part-00000.docs.parquet"));
    for (i, (doc, id)) in docs.iter().zip(&order).enumerate() {
        let mut expected = encode(&tokenizer, &rows[*id as usize].text);
        expected.push(pad);
        assert_eq!(doc, &expected, "document {i} (id {id})");
        assert_eq!(sidecar[i], (i as u64, Some(*id), start, doc.len() as u32));
        start += doc.len() as u64;
    }
}

#[test]
fn token_shards_concatenate_to_the_single_export() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, tok, tokenizer) = fixture(dir.path(), 400);
    let export = |to: &str, options: &str| {
        run_sql(
            &[&format!(
                "COPY (SELECT id, text FROM '{}/' ORDER BY shuffle_order(7)) TO '{to}' \
                 STORED AS TOKENS OPTIONS (tokenizer '{}', eos_token '<pad>', bos 'true', bos_token '<s>'{options})",
                p(dir.path(), "data"),
                tok.display()
            )],
            &[],
        );
    };
    let single = dir.path().join("single.bin");
    export(single.to_str().unwrap(), "");
    let sharded = dir.path().join("sharded");
    export(&format!("{}/", sharded.display()), ", shard_tokens 5000");
    let (version, stream) = read_flat(&single);
    assert_eq!(version, 1);
    let mut joined = Vec::new();
    let shards = output_files(&sharded)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "bin"))
        .collect::<Vec<_>>();
    assert!(shards.len() >= 3, "{shards:?}");
    for (i, shard) in shards.iter().enumerate() {
        let (_, tokens) = read_flat(shard);
        let last = i + 1 == shards.len();
        assert!(last || tokens.len() >= 5000, "shard {i}: {}", tokens.len());
        // Closed at the first document boundary past 5000 tokens.
        let sidecar = read_sidecar(&shard.with_extension("docs.parquet"));
        let (_, _, start, count) = sidecar.last().unwrap();
        assert_eq!((start + u64::from(*count)) as usize, tokens.len());
        assert!(last || (*start as usize) < 5000);
        joined.extend(tokens);
    }
    assert_eq!(
        joined, stream,
        "the shards in name order are the single stream"
    );
    // The stream is <s> doc <pad> for each document, in the query's order.
    let (bos, eos) = (
        tokenizer.token_to_id("<s>").unwrap(),
        tokenizer.token_to_id("<pad>").unwrap(),
    );
    let sidecar = read_sidecar(&single.with_extension("docs.parquet"));
    let mut expected = Vec::new();
    for (_, id, _, _) in &sidecar {
        expected.push(bos);
        expected.extend(encode(&tokenizer, &rows[id.unwrap() as usize].text));
        expected.push(eos);
    }
    assert_eq!(stream, expected);
    let mut ids: Vec<i64> = sidecar.iter().map(|s| s.1.unwrap()).collect();
    assert_ne!(ids, (0..400).collect::<Vec<_>>(), "shuffled");
    ids.sort_unstable();
    assert_eq!(ids, (0..400).collect::<Vec<_>>());
}

#[test]
fn packing_within_blocks_pads_and_never_splits_a_short_document() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, tok, tokenizer) = fixture(dir.path(), 120);
    let out = dir.path().join("packed/");
    run_sql(
        &[&format!(
            "COPY (SELECT id, text FROM '{}/' ORDER BY id) TO '{}/' STORED AS MEGATRON \
             OPTIONS (tokenizer '{}', eos_token '<pad>', seq_len 128, pack 'within', pad_token '<unk>')",
            p(dir.path(), "data"),
            out.display(),
            tok.display()
        )],
        &[],
    );
    let (blocks, _) = read_megatron(&out.join("part-00000"));
    assert!(blocks.iter().all(|b| b.len() == 128), "every block is full");
    let stream: Vec<u32> = blocks.concat();
    let unk = tokenizer.token_to_id("<unk>").unwrap();
    let sidecar = read_sidecar(&out.join("part-00000.docs.parquet"));
    let mut covered = vec![false; stream.len()];
    for (row, id, start, count) in &sidecar {
        let (start, count) = (*start as usize, *count as usize);
        let mut expected = encode(&tokenizer, &rows[id.unwrap() as usize].text);
        expected.push(tokenizer.token_to_id("<pad>").unwrap());
        assert_eq!(
            &stream[start..start + count],
            expected.as_slice(),
            "row {row}"
        );
        if count <= 128 {
            assert_eq!(
                start / 128,
                (start + count - 1) / 128,
                "row {row} crosses a block"
            );
        }
        covered[start..start + count]
            .iter_mut()
            .for_each(|c| *c = true);
    }
    for (i, token) in stream.iter().enumerate() {
        assert!(
            covered[i] || *token == unk,
            "token {i} is neither a document's nor a pad"
        );
    }
    assert!(covered.iter().any(|c| !c), "some padding happened");
}

#[test]
fn packing_across_blocks_cuts_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tok, _) = fixture(dir.path(), 50);
    let plain = dir.path().join("plain.bin");
    let packed = dir.path().join("packed.bin");
    for (to, options) in [(&plain, ""), (&packed, ", seq_len 64")] {
        run_sql(
            &[&format!(
                "COPY (SELECT text FROM '{}/') TO '{}' STORED AS MEGATRON \
                 OPTIONS (tokenizer '{}', eos_token '<pad>'{options})",
                p(dir.path(), "data"),
                to.display(),
                tok.display()
            )],
            &[],
        );
    }
    let (documents, _) = read_megatron(&plain.with_extension(""));
    let (blocks, _) = read_megatron(&packed.with_extension(""));
    assert_eq!(documents.len(), 50);
    assert_eq!(blocks.concat(), documents.concat(), "the same stream");
    let (last, full) = blocks.split_last().unwrap();
    assert!(full.iter().all(|b| b.len() == 64) && !last.is_empty() && last.len() <= 64);
    assert_eq!(
        std::fs::read(plain.with_extension("bin")).unwrap(),
        std::fs::read(packed.with_extension("bin")).unwrap()
    );
}

#[test]
fn token_columns_export_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.bin");
    // A vocabulary past 65,536 tokens: uint32 tokens (llm.c's Llama 3 header); Megatron would
    // use int32.
    run_sql(
        &[&format!(
            "COPY (SELECT make_array(arrow_cast(v, 'UInt32'), arrow_cast(v * 2, 'UInt32')) AS tokens \
             FROM (VALUES (1), (40000), (70000)) AS t(v)) TO '{}' STORED AS TOKENS \
             OPTIONS (vocab_size 200000, sidecar 'false')",
            out.display()
        )],
        &[],
    );
    assert_eq!(
        read_flat(&out),
        (7, vec![1, 2, 40000, 80000, 70000, 140000])
    );
    assert_eq!(names(dir.path()), vec!["big.bin"], "no sidecar, no index");
}

#[test]
fn tokenize_and_token_count_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, tok, tokenizer) = fixture(dir.path(), 40);
    let out = dir.path().join("counts.jsonl");
    run_sql(
        &[&format!(
            "COPY (SELECT id, token_count(text, '{tok}') AS n, tokenize(text, '{tok}', '<pad>', true) AS t \
             FROM '{}/' WHERE token_count(text, '{tok}') > 150 ORDER BY id) TO '{}'",
            p(dir.path(), "data"),
            out.display(),
            tok = tok.display()
        )],
        &[],
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (bos, eos) = (
        tokenizer.token_to_id("<s>").unwrap(),
        tokenizer.token_to_id("<pad>").unwrap(),
    );
    let kept: Vec<&Row> = rows
        .iter()
        .filter(|r| encode(&tokenizer, &r.text).len() > 150)
        .collect();
    assert!(!kept.is_empty() && kept.len() < rows.len());
    assert_eq!(lines.len(), kept.len());
    for (line, row) in lines.iter().zip(kept) {
        let ids = encode(&tokenizer, &row.text);
        assert_eq!(line["id"].as_i64(), Some(row.id));
        assert_eq!(line["n"].as_u64(), Some(ids.len() as u64));
        let mut expected = vec![bos];
        expected.extend(&ids);
        expected.push(eos);
        let got: Vec<u32> = line["t"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, expected, "id {}", row.id);
    }
}

#[test]
fn real_tokenizers_find_their_end_of_document_token() {
    let (Some(minilm), Some(smollm)) = (
        testing::real_model("all-MiniLM-L6-v2"),
        testing::real_model("SmolLM2-135M-Instruct.Q4_1.gguf"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let docs = repo().join("examples/data/docs.jsonl");
    let bert = minilm.join("tokenizer.json");
    for (name, tok, eos) in [
        ("bert", &bert, "[SEP]"),
        ("smollm", &smollm, "<|endoftext|>"),
    ] {
        let prefix = dir.path().join(name);
        run_sql(
            &[&format!(
                "COPY (SELECT id, text FROM '{}' ORDER BY id LIMIT 50) TO '{}.bin' STORED AS MEGATRON \
                 OPTIONS (tokenizer '{}')",
                docs.display(),
                prefix.display(),
                tok.display()
            )],
            &[],
        );
        let (documents, code) = read_megatron(&prefix);
        assert_eq!((documents.len(), code), (50, 8), "{name}");
        let reference = delt_models::tokenizer::load(tok).unwrap();
        let eos = reference.token_to_id(eos).unwrap();
        let texts: Vec<String> = std::fs::read_to_string(&docs)
            .unwrap()
            .lines()
            .take(50)
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        for (i, (doc, text)) in documents.iter().zip(&texts).enumerate() {
            let mut expected = encode(&reference, text);
            expected.push(eos);
            assert_eq!(doc, &expected, "{name} document {i}");
        }
    }
}

#[test]
fn bad_exports_say_what_is_wrong_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tok, _) = fixture(dir.path(), 20);
    let data = p(dir.path(), "data");
    let out = dir.path().join("out");
    let copy = |select: &str, format: &str, options: &str| {
        fail_sql(&[&format!(
            "COPY ({select}) TO '{}/' STORED AS {format} OPTIONS ({options})",
            out.display()
        )])
    };
    let tok = tok.display();
    let cases = [
        (
            copy(
                &format!("SELECT text FROM '{data}/'"),
                "MEGATRON",
                &format!("tokenizer '{tok}', eos_token '<pad>', colour 'red'"),
            ),
            "unknown option 'colour'",
        ),
        (
            copy(
                &format!("SELECT text AS body FROM '{data}/'"),
                "TOKENS",
                &format!("tokenizer '{tok}', eos_token '<pad>'"),
            ),
            "no column 'text' to tokenize",
        ),
        (
            copy(
                &format!("SELECT text FROM '{data}/'"),
                "TOKENS",
                "tokenizer 'missing/tokenizer.json'",
            ),
            "missing/tokenizer.json",
        ),
        (
            copy(
                &format!("SELECT text FROM '{data}/'"),
                "MEGATRON",
                &format!("tokenizer '{tok}'"),
            ),
            "no end-of-document token",
        ),
        (
            copy(
                "SELECT make_array(1, 2) AS tokens",
                "TOKENS",
                "vocab_size 70000, dtype 'uint16'",
            ),
            "too large for dtype uint16",
        ),
        (
            copy(
                "SELECT make_array(1, 70000) AS tokens",
                "MEGATRON",
                "vocab_size 1000",
            ),
            "token id 70000, outside the vocabulary of 1000 tokens",
        ),
        (
            copy("SELECT make_array(1, 2) AS tokens", "TOKENS", "eos 'true'"),
            "option eos needs a tokenizer",
        ),
        (
            copy(
                &format!("SELECT text FROM '{data}/'"),
                "MEGATRON",
                &format!("tokenizer '{tok}', eos_token '<pad>', pack 'within'"),
            ),
            "option pack needs seq_len",
        ),
    ];
    for (stderr, expected) in cases {
        assert!(
            stderr.contains(expected),
            "expected '{expected}' in: {stderr}"
        );
    }
    assert!(!out.exists(), "nothing written");
    assert_eq!(
        names(dir.path()),
        vec!["data", "tokenizer.json"],
        "nothing staged"
    );
}
