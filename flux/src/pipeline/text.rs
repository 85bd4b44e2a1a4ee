//! The text stage: CLIP's pooled vector and T5's token states for every prompt.

use burn::tensor::{Int, Tensor, TensorData};
use flux_nn::FluxBackend;
use flux_text::{ClipTextEncoder, T5Encoder};

use super::lora::Component;
use super::{CLIP_MAX_LEN, Pipeline};
use crate::{GenerateRequest, Result};

impl<B: FluxBackend> Pipeline<B> {
    pub(super) fn load_clip(&self) -> Result<ClipTextEncoder<B>> {
        let (adapters, lora_mode) = self.lora_for(Component::Clip);
        let options = flux_text::LoadConfig {
            adapters,
            lora_mode,
            ..self.dense_load_config()
        };
        Ok(flux_text::load_clip_with::<B>(
            &self.files.clip,
            &self.device,
            options,
        )?)
    }

    pub(super) fn load_t5(&self) -> Result<T5Encoder<B>> {
        let options = flux_text::LoadConfig {
            dtype: self.dtype,
            quantization: self.quantization,
            ..Default::default()
        };
        Ok(flux_text::load_t5_with::<B>(
            &self.files.t5,
            &self.device,
            options,
        )?)
    }

    /// Token ids of every prompt, `[n, len]`.
    fn ids(&self, rows: Vec<Vec<u32>>, len: usize) -> Tensor<B, 2, Int> {
        let n = rows.len();
        let flat: Vec<i64> = rows.into_iter().flatten().map(i64::from).collect();
        Tensor::from_data(TensorData::new(flat, [n, len]), &self.device)
    }

    /// T5 tokens `[b, len, 4096]` and pooled CLIP `[b, 768]` for `prompts`, each repeated
    /// `images_per_prompt` times (consecutively, like diffusers). With `negatives` (true CFG),
    /// theirs too, from the same encoder passes: `(prompts, negatives)`.
    pub(super) fn encode_prompts(
        &self,
        r: &GenerateRequest,
        negatives: &[String],
    ) -> Result<(Encoded<B>, Option<Encoded<B>>)> {
        let all: Vec<&String> = r.prompts.iter().chain(negatives).collect();
        let clip_ids = all
            .iter()
            .map(|p| self.clip_tokenizer.encode(p, CLIP_MAX_LEN))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let t5_ids = all
            .iter()
            .map(|p| self.t5_tokenizer.encode(p, self.t5_max_len))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let clip_ids = self.ids(clip_ids, CLIP_MAX_LEN);
        let t5_ids = self.ids(t5_ids, self.t5_max_len);
        // Sequential memory: each encoder lives only for its own statement.
        let clip = self.model(|m| &m.clip, Self::load_clip)?;
        let pooled = self.request_clip(clip, r)?.try_forward(clip_ids)?.pooled;
        let txt = self.model(|m| &m.t5, Self::load_t5)?.try_forward(t5_ids)?;
        let n = r.images_per_prompt;
        let split = |from: usize, count: usize| -> Encoded<B> {
            let [_, len, width] = txt.dims();
            let [_, dim] = pooled.dims();
            let t = txt.clone().narrow(0, from, count);
            let p = pooled.clone().narrow(0, from, count);
            (
                t.unsqueeze_dim::<4>(1)
                    .repeat_dim(1, n)
                    .reshape([count * n, len, width]),
                p.unsqueeze_dim::<3>(1)
                    .repeat_dim(1, n)
                    .reshape([count * n, dim]),
            )
        };
        let k = r.prompts.len();
        let negative = (!negatives.is_empty()).then(|| split(k, negatives.len()));
        Ok((split(0, k), negative))
    }
}

/// T5 tokens `[b, len, 4096]` and pooled CLIP `[b, 768]`.
pub(super) type Encoded<B> = (Tensor<B, 3>, Tensor<B, 2>);
